package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/p11derive/p11derive/derive"
)

// keyFlags select an existing secret key by CKA_LABEL and/or CKA_ID: a
// label flag and its ID flag (--key/--id, --base/--base-id,
// --wrap-key/--wrap-key-id). Given both, the key must have both. The
// command's main key (the one --key or --base names) may also come from
// the URI's object= and id=.
type keyFlags struct {
	label, id         string
	labelName, idName string
}

func (k *keyFlags) register(fs *flag.FlagSet, labelName, idName, what string) {
	k.labelName, k.idName = labelName, idName
	fs.StringVar(&k.label, labelName, "", "CKA_LABEL of "+what)
	fs.StringVar(&k.id, idName, "", "CKA_ID of "+what+", `hex` (with --"+labelName+": the key must have both)")
}

// given reports whether either flag has a value.
func (k *keyFlags) given() bool { return k.label != "" || k.id != "" }

// names is how usage messages name the flags: "--base or --base-id".
func (k *keyFlags) names() string { return "--" + k.labelName + " or --" + k.idName }

// selector is the key the flags select, merged with the URI's object= and
// id= (fromURI, nil for a key the URI does not name); a flag and the URI
// that disagree are a usage error. Nothing here reaches the token.
func (k *keyFlags) selector(fromURI *derive.Selector) (derive.Selector, error) {
	sel := derive.Selector{Label: k.label}
	if k.id != "" {
		id, err := hexFlag(k.idName, k.id)
		if err != nil {
			return sel, err
		}
		if len(id) == 0 {
			return sel, usageError{fmt.Errorf("--%s: an empty CKA_ID selects nothing", k.idName)}
		}
		sel.ID = id
	}
	if fromURI == nil {
		return sel, nil
	}
	if u := fromURI.Label; u != "" {
		if sel.Label != "" && sel.Label != u {
			return sel, usageError{fmt.Errorf("--%s %q conflicts with object=%q in the URI", k.labelName, sel.Label, u)}
		}
		sel.Label = u
	}
	if u := fromURI.ID; len(u) > 0 {
		if len(sel.ID) > 0 && !bytes.Equal(sel.ID, u) {
			return sel, usageError{fmt.Errorf("--%s %s conflicts with id=%s in the URI", k.idName, hex.EncodeToString(sel.ID), hex.EncodeToString(u))}
		}
		sel.ID = u
	}
	return sel, nil
}

// required is the selector, which must name a key.
func (k *keyFlags) required(fromURI *derive.Selector) (derive.Selector, error) {
	sel, err := k.selector(fromURI)
	if err != nil {
		return sel, err
	}
	if sel.Label == "" && len(sel.ID) == 0 {
		msg := k.names() + " is required"
		if fromURI != nil {
			msg += " (or object=/id= in --uri)"
		}
		return sel, usageError{errors.New(msg)}
	}
	return sel, nil
}

// uriKey is the key the --uri names (object=, id=), parsed before any
// token call: an empty Selector without a URI.
// Several URIs (a batch over a group) must name the same key, or none.
func (f *tokenFlags) uriKey() (*derive.Selector, error) {
	if f.uri == "" {
		return &derive.Selector{}, nil
	}
	u, err := derive.ParseURI(f.uri)
	if err != nil {
		return nil, err
	}
	for _, other := range f.uris[1:] {
		o, err := derive.ParseURI(other)
		if err != nil {
			return nil, err
		}
		if o.Key.Label != u.Key.Label || string(o.Key.ID) != string(u.Key.ID) {
			return nil, usageError{fmt.Errorf("the --uri flags name different keys (%s; %s): the tokens of a group hold one base key", u.Key, o.Key)}
		}
	}
	return &u.Key, nil
}

// findKey finds the one key sel selects; an ambiguous selection says how
// to make it one.
func findKey(ctx context.Context, tok *derive.Token, sel derive.Selector) (*derive.Key, error) {
	k, err := tok.Find(ctx, sel)
	if errors.Is(err, derive.ErrAmbiguous) {
		how := "give its CKA_ID too"
		if len(sel.ID) > 0 {
			how = "the token holds several keys with the same label and ID; destroy all but one"
		}
		return nil, fmt.Errorf("%w (%s; p11derive keys lists them)", err, how)
	}
	return k, err
}

// labelsTaken refuses labels that token objects of the token have already
// (nothing, or the error), for a command about to make token objects with
// them; with replace, it returns the one key of each label to destroy once
// its successor exists (several keys of one label are refused: which one
// would be replaced?).
// offer says whether the command has --replace, for the error.
func labelsTaken(ctx context.Context, tok *derive.Token, labels []string, replace, offer bool) ([]*derive.Key, error) {
	var old []*derive.Key
	for _, l := range labels {
		ks, err := tok.Keys(ctx, derive.Selector{Label: l})
		if err != nil {
			return nil, err
		}
		switch {
		case len(ks) == 0:
		case !replace && offer:
			return nil, fmt.Errorf("p11derive: a secret key labelled %q exists already: give another --label, or --replace to replace it (the old key is destroyed once the new one exists)", l)
		case !replace:
			return nil, fmt.Errorf("p11derive: a secret key labelled %q exists already: give another --label", l)
		case len(ks) > 1:
			return nil, fmt.Errorf("p11derive: %d secret keys are labelled %q: --replace replaces one; destroy the others first (p11derive keys --key %s lists them, p11derive destroy --id removes one)", len(ks), l, quoteArg(l))
		default:
			old = append(old, ks[0])
		}
	}
	return old, nil
}

// quoteArg is s quoted for a shell if it needs it.
func quoteArg(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`;&|<>()*?[]#~!{}") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
