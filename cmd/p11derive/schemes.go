package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/derive/scheme/verify"
	"github.com/p11derive/p11derive/internal/batch"
)

// schemeUsage is the help of 'p11derive scheme', its list of schemes made
// from schemeDefs.
func schemeUsage() string {
	var b strings.Builder
	b.WriteString(`usage: p11derive scheme <name> [token flags] --base LABEL [scheme flags] [key flags]

Derives the keys of a published scheme inside the token, from the base key
labelled --base, and prints the derived key (or keys) as JSON, with the
scheme's non-secret inputs (the PAN masked) for an audit trail.

schemes ('p11derive scheme NAME -h' for a scheme's own flags):
`)
	for _, d := range schemeDefs {
		fmt.Fprintf(&b, "  %-9s %s\n", d.name, d.inputs)
		for _, l := range strings.Split(d.summary, "\n") {
			fmt.Fprintf(&b, "            %s\n", l)
		}
	}
	b.WriteString(`  list      the schemes and their cases: what each needs, what is refused and why;
            with --token, --slot or --uri, each case run on throwaway session keys of
            published value and what the token really computes: verified, refused or error

` + schemeKeyFlags + `
Every derivation runs inside the token; what the token cannot compute is
refused with exit status 1 and one line on stderr, never computed on the host.
`)
	return b.String()
}

// schemeKeyFlags is the help of the flags every scheme takes.
const schemeKeyFlags = `key flags:
  --label LABEL     the derived key's CKA_LABEL (tr31: LABEL-kbek and LABEL-kbak;
                    gp-div: LABEL-enc, LABEL-mac and LABEL-dek)
  --token-object    make the derived key a token object (needs --label)
  --usage LIST      derive,encrypt,decrypt,sign,verify,wrap,unwrap (default: the scheme's)
  --strategy NAME   force a strategy of package derive (default auto)
  --kcv METHOD      check value convention: ecb (default), cmac, attribute (the token's
                    CKA_CHECK_VALUE, unverified), none; a key without the usage is
                    checked on a session copy with it set, destroyed at once
  --wrap-key LABEL  print each derived key wrapped under this key (C_WrapKey) and destroy it
  --wrap-mech MECH  aes-key-wrap (default), aes-key-wrap-pad, des3-ecb, des3-cbc [--wrap-iv HEX]

token flags: --module PATH, --init-args STR, --token LABEL | --slot ID | --uri pkcs11:...,
  --pin-env NAME, --pin-file PATH (see 'p11derive -h')
`

// usage is the help of one scheme: its synopsis, what it does, its own
// flags, and the flags every scheme takes.
func (d *schemeDef) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: p11derive scheme %s [token flags] --base LABEL | --base-id HEX %s [key flags]\n\n", d.name, d.inputs)
	b.WriteString(d.summary + ".\n\n" + d.name + " flags:\n  -base LABEL\n    \tCKA_LABEL of the base key\n  -base-id HEX\n    \tCKA_ID of the base key (with -base: it must have both; or --uri's object= and id=)\n")
	own := flag.NewFlagSet(d.name, flag.ContinueOnError)
	d.flags(own)
	own.SetOutput(&b)
	own.PrintDefaults()
	b.WriteString("\n" + schemeKeyFlags)
	return b.String()
}

// schemeJSON is a derived key as the scheme command prints it: the scheme,
// its base key and inputs, the key object, how it was derived, and its
// wrapping.
type schemeJSON struct {
	Scheme string `json:"scheme"`
	// Base is the base key's label, and Inputs the scheme's non-secret
	// inputs (the PAN masked to its first 6 and last 4 digits): with the
	// key, an audit trail of what was derived from what.
	Base   string            `json:"base"`
	Inputs map[string]string `json:"inputs"`
	keyJSON
	derivationJSON
	// Wrapped is the key wrapped under WrappedBy with WrapMech (--wrap-key):
	// the key was destroyed in the token after.
	Wrapped     string `json:"wrapped,omitempty"`
	WrapMech    string `json:"wrap_mech,omitempty"`
	WrappedBy   string `json:"wrapped_by,omitempty"`
	Derivations int    `json:"derivations"`
	// Strategies is each derivation's strategy, when there are several.
	Strategies []string `json:"strategies,omitempty"`
}

// schemeDoc is the document of a scheme that makes one key: schemeJSON's
// fields at the top level.
type schemeDoc struct {
	SchemaVersion int `json:"schema_version"`
	schemeJSON
}

// schemeKeysDoc is the document of a scheme that makes several keys (tr31:
// kbek and kbak; gp-div: enc, mac and dek): each by name under keys.
type schemeKeysDoc struct {
	SchemaVersion int                   `json:"schema_version"`
	Scheme        string                `json:"scheme"`
	Keys          map[string]schemeJSON `json:"keys"`
}

func cmdScheme(args []string, stdout io.Writer) (err error) {
	if len(args) == 0 {
		return usageError{fmt.Errorf("which scheme? (%s; -h for help)", schemeNames())}
	}
	name := args[0]
	if name == "-h" || name == "-help" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, schemeUsage())
		return flag.ErrHelp
	}
	if name == "list" {
		return cmdSchemeList(args[1:], stdout)
	}
	def := schemeByName(name)
	if def == nil {
		return usageError{fmt.Errorf("unknown scheme %q (%s)", name, schemeNames())}
	}
	c, err := parseSchemeCmd(def, args[1:])
	if err != nil {
		return err
	}
	o, sr, wrap := c.o, c.sr, c.wrap

	tok, err := c.tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	k, err := findKey(ctx, tok, c.baseSel)
	if err != nil {
		return err
	}
	if wrap != nil {
		if wrap.Key, err = findKey(ctx, tok, c.wrapSel); err != nil {
			return fmt.Errorf("p11derive: wrapping key: %w", err)
		}
		if err := wrap.Check(0); err != nil {
			return err
		}
	}
	if o.Persistent {
		if err := schemeLabelsFree(ctx, tok, o.Label, sr.names); err != nil {
			return err
		}
	}
	results, err := sr.run(ctx, tok, k)
	if err != nil {
		return err
	}
	var made []*derive.Key
	for _, res := range results {
		made = append(made, res.Key)
	}
	if o.Persistent {
		if err := ownLabels(ctx, tok, made); err != nil {
			return err
		}
	}
	if wrap != nil {
		// The keys leave wrapped and are destroyed, on every path.
		defer func() {
			for _, res := range results {
				if derr := tok.Destroy(context.WithoutCancel(ctx), res.Key); derr != nil && err == nil {
					err = derr
				}
			}
		}()
	}
	out, err := schemeResults(ctx, tok, k, sr, results, wrap, c.km)
	if err != nil {
		return err
	}
	return reported(ctx, tok, printScheme(stdout, sr, out), made...)
}

// printScheme prints the keys a scheme made: one key's document, or an
// object of its keys by name.
func printScheme(stdout io.Writer, sr *schemeRun, out []schemeJSON) error {
	if sr.names != nil {
		m := make(map[string]schemeJSON, len(out))
		for i, n := range sr.names {
			m[n] = out[i]
		}
		return printJSON(stdout, schemeKeysDoc{SchemaVersion: schemaVersion, Scheme: sr.name, Keys: m})
	}
	return printJSON(stdout, schemeDoc{SchemaVersion: schemaVersion, schemeJSON: out[0]})
}

// schemeCmd is the command line of 'scheme NAME', parsed and checked.
type schemeCmd struct {
	tf               tokenFlags
	baseSel, wrapSel derive.Selector
	wrap             *batch.Wrap // nil unless --wrap-key; its key is found later
	km               derive.KCVMethod
	o                scheme.Options
	sr               *schemeRun
}

// parseSchemeCmd parses the flags of scheme def, its own among them,
// completely before the token is opened.
func parseSchemeCmd(def *schemeDef, args []string) (*schemeCmd, error) {
	c := &schemeCmd{}
	fs := flag.NewFlagSet("scheme "+def.name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), def.usage()) }
	c.tf.register(fs)
	var bk, wk keyFlags
	bk.register(fs, "base", "base-id", "the base key")
	label := fs.String("label", "", "the derived key's CKA_LABEL")
	tokenObject := fs.Bool("token-object", false, "make the derived key a token object")
	use := fs.String("usage", "", "the derived key's uses (default: the scheme's)")
	strategy := fs.String("strategy", "auto", "strategy of package derive")
	kcvMethod := kcvFlag(fs)
	wk.register(fs, "wrap-key", "wrap-key-id", "the wrapping key: print each derived key wrapped under it, and destroy it")
	wrapMech := fs.String("wrap-mech", "aes-key-wrap", "wrap mechanism: "+strings.Join(batch.WrapMechNames(), ", "))
	wrapIV := fs.String("wrap-iv", "", "des3-cbc's IV, `hex` (default 8 zero bytes)")
	parseScheme := def.flags(fs)
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	uriKey, err := c.tf.uriKey()
	if err != nil {
		return nil, err
	}
	if c.baseSel, err = bk.required(uriKey); err != nil {
		return nil, err
	}
	if c.wrapSel, err = wk.selector(nil); err != nil {
		return nil, err
	}
	if *tokenObject && *label == "" {
		return nil, usageError{errors.New("--token-object needs --label, or the key could never be found again")}
	}
	u, err := parseUsage(*use)
	if err != nil {
		return nil, err
	}
	if c.km, err = parseKCV(*kcvMethod); err != nil {
		return nil, err
	}
	if wk.given() {
		if *tokenObject {
			return nil, usageError{errors.New("--wrap-key prints the key wrapped and destroys it: no --token-object")}
		}
		if c.wrap, err = wrapFlags(*wrapMech, *wrapIV); err != nil {
			return nil, err
		}
	} else if set := setFlags(fs); set["wrap-mech"] || set["wrap-iv"] {
		return nil, usageError{errors.New("--wrap-mech and --wrap-iv need --wrap-key")}
	}
	c.o = scheme.Options{Label: *label, Persistent: *tokenObject, Usage: u, Extractable: c.wrap != nil}
	if *strategy != "auto" {
		c.o.Strategy = derive.Strategy(*strategy)
	}
	if c.sr, err = parseScheme(c.o); err != nil {
		return nil, err
	}
	return c, nil
}

// schemeLabelsFree checks that no key holds the labels a persistent run
// gives its keys: label, or LABEL-NAME for each of names when the scheme
// makes several keys (persistent keys never duplicate a label).
func schemeLabelsFree(ctx context.Context, tok *derive.Token, label string, names []string) error {
	labels := []string{label}
	if names != nil {
		labels = labels[:0]
		for _, n := range names {
			labels = append(labels, label+"-"+n)
		}
	}
	for _, l := range labels {
		if err := labelFree(ctx, tok, l); err != nil {
			return err
		}
	}
	return nil
}

// ownLabels checks that each key made is alone under its label; when one
// is not, it destroys the others and fails.
func ownLabels(ctx context.Context, tok *derive.Token, made []*derive.Key) error {
	for i, k := range made {
		if err := ownLabel(ctx, tok, k); err != nil {
			for _, other := range made[:i] {
				tok.Destroy(context.WithoutCancel(ctx), other)
			}
			for _, other := range made[i+1:] {
				tok.Destroy(context.WithoutCancel(ctx), other)
			}
			return err
		}
	}
	return nil
}

// schemeResults describes the keys a scheme made from base key k, each
// wrapped under wrap's key when wrap is not nil.
func schemeResults(ctx context.Context, tok *derive.Token, k *derive.Key, sr *schemeRun, results []*scheme.Result, wrap *batch.Wrap, km derive.KCVMethod) ([]schemeJSON, error) {
	out := make([]schemeJSON, len(results))
	for i, res := range results {
		j := describeKCV(ctx, tok, res.Key, km)
		j.Warnings = append(res.Warnings, derive.BaseKeyWarnings(k)...)
		out[i] = schemeJSON{Scheme: sr.name, Base: k.Label, Inputs: sr.inputs, keyJSON: j, Derivations: res.Derivations,
			derivationJSON: derivationJSON{KDF: res.Function, Strategy: string(res.Strategy), Calls: res.Calls}}
		if wrap != nil {
			w, err := batch.WrapKey(ctx, tok, wrap, res.Key)
			if err != nil {
				return nil, err
			}
			out[i].Wrapped, out[i].WrapMech, out[i].WrappedBy = hex.EncodeToString(w), wrap.Mech.Name, wrap.Key.Label
		}
		if len(res.Strategies) > 1 {
			for _, st := range res.Strategies {
				out[i].Strategies = append(out[i].Strategies, string(st))
			}
		}
	}
	return out, nil
}

// cmdSchemeList prints the scheme catalog; given a token (--token, --slot,
// --uri, or --module on the command line), it runs each case on the token,
// in read-only sessions, and says what the token computes.
func cmdSchemeList(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("scheme list", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), schemeListUsage) }
	var tf tokenFlags
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	// A token only when one is named on the command line: P11DERIVE_MODULE
	// alone does not make the catalog need a token.
	onToken := tf.given("module") || tf.uri != "" || tf.label != "" || tf.slot >= 0
	if !onToken {
		return printJSON(stdout, schemeListDoc{schemaVersion, schemeCatalog()})
	}
	tok, err := tf.openWith(true)
	if err != nil {
		return err
	}
	defer tok.Close()
	res, err := verify.Run(rootCtx, tok)
	if err != nil {
		return err
	}
	var out []schemeEntryJSON
	incomplete := false
	for _, e := range res {
		out = append(out, schemeOnToken(tok, e))
		if e.Status == verify.Error || e.Status == verify.Wrong {
			incomplete = true
		}
	}
	if err := printJSON(stdout, schemeListDoc{schemaVersion, out}); err != nil {
		return err
	}
	if incomplete {
		return exitError{code: exitIncomplete, err: errors.New("p11derive scheme list: some cases failed with an error or a wrong key: see their checks")}
	}
	return nil
}

// schemeListUsage is the help of 'p11derive scheme list'.
const schemeListUsage = `usage: p11derive scheme list [--token LABEL | --slot ID | --uri pkcs11:... [token flags]]

Without a token: the schemes and their cases, what each needs (mechanisms),
what is refused and why. With a token: each computed case run on throwaway
session keys of published value in read-only sessions, every key destroyed
after, and per case what the token really computes: "verified" (the known
answer of the published vector, or of a software reference where none was
found: each check says which), "wrong", "refused" (with the token's CKR and
the mechanism) or "error" (the module or a session failed: exit status 3).
`

// The JSON of 'p11derive scheme list'.
type schemeMechJSON struct {
	Name   string `json:"name"`
	Listed *bool  `json:"listed,omitempty"`
}
type schemeCheckJSON struct {
	Variant     string `json:"variant"`
	Status      string `json:"status"`
	Source      string `json:"known_answer"`
	Strategy    string `json:"strategy,omitempty"`
	KDF         string `json:"kdf,omitempty"`
	Derivations int    `json:"derivations,omitempty"`
	CKR         string `json:"ckr,omitempty"`
	Call        string `json:"call,omitempty"`
	Mechanism   string `json:"mechanism,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Want        string `json:"want_kcv,omitempty"`
	Got         string `json:"got_kcv,omitempty"`
}
type schemeEntryJSON struct {
	Scheme     string            `json:"scheme"`
	Case       string            `json:"case"`
	Standard   string            `json:"standard"`
	Status     string            `json:"status"`
	OnToken    string            `json:"on_token,omitempty"`
	Mechanisms []schemeMechJSON  `json:"mechanisms,omitempty"`
	Checks     []schemeCheckJSON `json:"checks,omitempty"`
	Note       string            `json:"note,omitempty"`
}
type schemeListDoc struct {
	SchemaVersion int               `json:"schema_version"`
	Schemes       []schemeEntryJSON `json:"schemes"`
}

// schemeCatalog is the catalog of schemes, without a token.
func schemeCatalog() []schemeEntryJSON {
	var out []schemeEntryJSON
	for _, e := range scheme.Catalog() {
		j := schemeEntryJSON{Scheme: e.Scheme, Case: e.Case, Standard: e.Standard, Status: string(e.Status), Note: e.Note}
		for _, m := range e.Mechanisms {
			j.Mechanisms = append(j.Mechanisms, schemeMechJSON{Name: scheme.MechanismName(m)})
		}
		out = append(out, j)
	}
	return out
}

// schemeOnToken is a case of the catalog as verified on tok.
func schemeOnToken(tok *derive.Token, e verify.EntryResult) schemeEntryJSON {
	j := schemeEntryJSON{Scheme: e.Scheme, Case: e.Case, Standard: e.Standard, Status: string(e.Entry.Status), OnToken: string(e.Status), Note: e.Note}
	for _, m := range e.Mechanisms {
		listed := tok.Lists(m)
		j.Mechanisms = append(j.Mechanisms, schemeMechJSON{Name: scheme.MechanismName(m), Listed: &listed})
	}
	for _, c := range e.Checks {
		j.Checks = append(j.Checks, schemeCheckJSON{Variant: c.Variant, Status: string(c.Status), Source: c.Source,
			Strategy: c.Strategy, KDF: c.KDF, Derivations: c.Derivations, CKR: c.CKR, Call: c.Call,
			Mechanism: c.Mechanism, Reason: c.Reason, Want: c.Want, Got: c.Got})
	}
	return j
}

// setFlags are the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
