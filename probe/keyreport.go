package probe

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
)

// analyseKey reads the base key opts.KeyLabel and opts.KeyID select and says what it
// can do on this token, judging from its attributes and from results (the
// probe's own findings). It changes nothing and derives nothing from it.
func analyseKey(ctx context.Context, tok *derive.Token, opts Options, all []*spec, results []Result) (*KeyReport, error) {
	k, err := tok.Find(ctx, derive.Selector{Label: opts.KeyLabel, ID: opts.KeyID})
	if err != nil {
		return nil, err
	}
	kr := &KeyReport{Label: k.Label, ID: hex.EncodeToString(k.ID), Type: derive.KeyTypeName(k.Type), Len: k.Len, TokenObject: k.Token,
		Usages: Usages(k),
		Attributes: map[string]bool{
			"CKA_SENSITIVE": k.Sensitive, "CKA_EXTRACTABLE": k.Extractable,
			"CKA_ALWAYS_SENSITIVE": k.AlwaysSensitive, "CKA_NEVER_EXTRACTABLE": k.NeverExtractable,
			"CKA_PRIVATE": k.Private,
			"CKA_DERIVE":  k.Derive, "CKA_SIGN": k.Sign, "CKA_VERIFY": k.Verify,
			"CKA_ENCRYPT": k.Encrypt, "CKA_DECRYPT": k.Decrypt, "CKA_WRAP": k.Wrap, "CKA_UNWRAP": k.Unwrap,
		},
		Uses:     []KeyUse{},
		Warnings: derive.BaseKeyWarnings(k),
	}
	modifiable, known := readBool(ctx, tok, k, pkcs11.CKA_MODIFIABLE)
	if known {
		kr.Attributes["CKA_MODIFIABLE"] = modifiable
	}
	kr.UnwrapTemplate = readUnwrapTemplate(ctx, tok, k)
	kr.MACUnwrapSafe = kr.UnwrapTemplate.ForcesSensitive && kr.UnwrapTemplate.ForcesNotExtractable

	status := map[string]*Result{}
	for i := range results {
		r := &results[i]
		status[r.KDF+"|"+paramsKey(r.Params)+"|"+r.Strategy] = r
	}
	macUnwrapUsable := false
	anyFits := false
	for _, s := range all {
		if s.f == nil {
			continue
		}
		plans, err := tok.Plan(k, derive.Request{Function: s.f, Data: s.data, KeyType: s.out})
		if errors.Is(err, derive.ErrKeyType) {
			continue // not a key of this function
		}
		anyFits = true
		if err != nil {
			kr.Uses = append(kr.Uses, KeyUse{KDF: s.kdf, Params: s.params, Usable: "no", Reason: trim(err)})
			continue
		}
		for _, pl := range plans {
			r := status[s.kdf+"|"+paramsKey(s.params)+"|"+string(pl.Strategy)]
			u := keyUse(s, pl, r, k, opts, known && !modifiable)
			if u.Usable != "no" && (pl.Strategy == derive.MACUnwrap || pl.Strategy == derive.CMACUnwrap) {
				macUnwrapUsable = true
			}
			kr.Uses = append(kr.Uses, u)
		}
	}
	if !anyFits {
		kr.Notes = append(kr.Notes, fmt.Sprintf("none of the functions probed takes a %s key", kr.Type))
	}
	if macUnwrapUsable && !kr.MACUnwrapSafe {
		kr.Notes = append(kr.Notes, "MAC-unwrap lets this key both MAC and unwrap: without a CKA_UNWRAP_TEMPLATE forcing "+
			"CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, anyone who may use the key can MAC chosen data, unwrap the "+
			"result into an extractable key and read E_K(x) for any x: the derived keys of every x (docs/design.md §3.2). "+
			"Give the key such a template before using MAC-unwrap with it.")
	}
	return kr, nil
}

// keyUse is what the report says of plan pl of spec s for key k: whether
// it is usable now, with changes, or not, and why. r is the probe's result
// of the plan's strategy, nil if none; fixed says the key's attributes
// cannot be changed (CKA_MODIFIABLE false).
func keyUse(s *spec, pl derive.StrategyPlan, r *Result, k *derive.Key, opts Options, fixed bool) KeyUse {
	u := KeyUse{KDF: s.kdf, Params: s.params, Strategy: string(pl.Strategy), Set: attrNames(pl.Missing)}
	if len(u.Set) == 0 {
		u.Set = nil
	}
	works := false
	if r != nil {
		u.TokenStatus = r.Status
		works = r.Status == Verified || r.Status == Ran || (r.Status == Listed && opts.ListOnly)
	}
	if r != nil && r.BaseKey != "" && !sameKind(r.BaseKey, k) {
		u.ProbedWith = r.BaseKey
	}
	switch {
	case !works && r != nil:
		u.Usable = "no"
		u.Reason = string(r.Status) + " on this token"
		if r.Reason != "" {
			u.Reason += ": " + r.Reason
		}
	case !works:
		u.Usable = "no"
		u.Reason = "not probed"
	case pl.Problem != nil && !errors.Is(pl.Problem, derive.ErrMissingAttribute) && !errors.Is(pl.Problem, derive.ErrUnsupported):
		u.Usable = "no"
		u.Reason = trim(pl.Problem)
	case len(pl.Missing) == 0:
		u.Usable = "now"
	default:
		u.Usable = "with-changes"
		if fixed {
			u.Reason = "CKA_MODIFIABLE is false: the attributes cannot be changed, the key must be made again"
		}
	}
	return u
}

// sameKind reports whether the probe's base key kind (aes-128, des3, des,
// generic-32) is of k's type.
func sameKind(kind string, k *derive.Key) bool {
	switch kind {
	case "aes-128":
		return k.Type == pkcs11.CKK_AES
	case "des3":
		return k.Type == pkcs11.CKK_DES3 || k.Type == pkcs11.CKK_DES2
	case "des":
		return k.Type == pkcs11.CKK_DES
	case "generic-32":
		return k.Type == pkcs11.CKK_GENERIC_SECRET
	}
	return false
}

// readBool reads one boolean attribute; known is false if the token does
// not give it.
func readBool(ctx context.Context, tok *derive.Token, k *derive.Key, cka uint) (v, known bool) {
	a, err := tok.Attributes(ctx, k, cka)
	if err == nil && len(a[cka]) == 1 {
		return a[cka][0] != 0, true
	}
	return false, false
}

// readUnwrapTemplate reads the key's CKA_UNWRAP_TEMPLATE.
func readUnwrapTemplate(ctx context.Context, tok *derive.Token, k *derive.Key) UnwrapTemplate {
	entries, present, err := tok.Template(ctx, k, pkcs11.CKA_UNWRAP_TEMPLATE)
	if err != nil {
		return UnwrapTemplate{State: "unreadable", Reason: trim(err)}
	}
	if !present {
		return UnwrapTemplate{State: "absent"}
	}
	if len(entries) == 0 {
		return UnwrapTemplate{State: "absent", Reason: "the template is empty"}
	}
	ut := UnwrapTemplate{State: "present", Attributes: map[string]string{}}
	for _, e := range entries {
		v := hex.EncodeToString(e.Value)
		isBool := len(e.Value) == 1
		if isBool {
			v = fmt.Sprint(e.Value[0] != 0)
		}
		ut.Attributes[attrName(e.Type)] = v
		switch {
		case e.Type == pkcs11.CKA_SENSITIVE && isBool && e.Value[0] != 0:
			ut.ForcesSensitive = true
		case e.Type == pkcs11.CKA_EXTRACTABLE && isBool && e.Value[0] == 0:
			ut.ForcesNotExtractable = true
		}
	}
	return ut
}

// Usages are the key's uses that are true (CKA_DERIVE, CKA_ENCRYPT…), by
// p11derive's names (those of the command's --usage).
func Usages(k *derive.Key) []string {
	u := []string{}
	for _, x := range []struct {
		on   bool
		name string
	}{{k.Derive, "derive"}, {k.Encrypt, "encrypt"}, {k.Decrypt, "decrypt"}, {k.Sign, "sign"}, {k.Verify, "verify"}, {k.Wrap, "wrap"}, {k.Unwrap, "unwrap"}} {
		if x.on {
			u = append(u, x.name)
		}
	}
	return u
}
