package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/an10922"
	"github.com/p11derive/p11derive/derive/dukpt"
	"github.com/p11derive/p11derive/derive/emv"
	"github.com/p11derive/p11derive/derive/gp"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/derive/tr31"
	"github.com/p11derive/p11derive/internal/batch"
)

// schemeUsage is the help of 'p11derive scheme'.
const schemeUsage = `usage: p11derive scheme <name> [token flags] --base LABEL [scheme flags] [key flags]

Derives the keys of a published scheme inside the token, from the base key
labelled --base, and prints the derived key (or keys) as JSON.

schemes:
  emv-mk    EMV ICC master key (Book 2 A1.4): --pan DIGITS [--psn NN] [--option a|b|c]
            (a, b: Triple DES issuer master key; c: AES-128/192/256)
  emv-sk    EMV common session key (Book 2 A1.3.1): --atc HEX | --r HEX
  scp02     GlobalPlatform SCP02 session key: --key s-enc|c-mac|r-mac|dek --seq HEX
  scp03     GlobalPlatform SCP03 session key: --key s-enc|s-mac|s-rmac
            --host-challenge HEX --card-challenge HEX
  an10922   NXP AN10922 AES-128 diversification: --m HEX | --uid HEX [--aid HEX] [--sysid HEX]
  dukpt-ik  X9.24-3 AES DUKPT initial key: --ikid HEX
  dukpt     X9.24-3 AES DUKPT: --ksn HEX [--from bdk|ik|txn]
            [--working pin|mac-gen|mac-verify|mac-both|data-encrypt|data-decrypt|data-both|kek
             --working-type aes128|aes192|aes256|tdes2|tdes3|hmac128|hmac192|hmac256]
            from the BDK (default) or the initial key: the working key, or without --working
            the transaction key; from the transaction key: the working key (intermediate keys
            are session objects, destroyed on every path)
  tr31      TR-31 / X9.143 key block protection keys KBEK and KBAK: --version A|B|C|D
  gp-div    a card's static GlobalPlatform keys ENC, MAC and DEK from a master key:
            --method emv|visa2|kdf3 --kdd HEX (10 bytes)
            emv: EMV CPS 1.1, visa2: VISA2 (Triple DES master key); kdf3: the SCP03 KDF
            (AES master key)
  list      the schemes and their cases: what each needs, what is refused and why,
            and (with token flags) which needed mechanisms the token lists

key flags:
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

Every derivation runs inside the token; what the token cannot compute is
refused with exit status 1 and one line on stderr, never computed on the host.
`

// schemeJSON is a derived key as the scheme command prints it.
type schemeJSON struct {
	Scheme string `json:"scheme"`
	keyJSON
	// Wrapped is the key wrapped under WrappedBy with WrapMech (--wrap-key):
	// the key was destroyed in the token after.
	Wrapped     string `json:"wrapped,omitempty"`
	WrapMech    string `json:"wrap_mech,omitempty"`
	WrappedBy   string `json:"wrapped_by,omitempty"`
	Derivations int    `json:"derivations"`
	// Strategies is each derivation's strategy, when there are several.
	Strategies []string `json:"strategies,omitempty"`
}

func cmdScheme(args []string, stdout io.Writer) (err error) {
	if len(args) == 0 {
		return usageError{errors.New("which scheme? (emv-mk, emv-sk, scp02, scp03, an10922, dukpt-ik, dukpt, tr31, gp-div; -h for help)")}
	}
	name := args[0]
	if name == "-h" || name == "-help" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, schemeUsage)
		return flag.ErrHelp
	}
	if name == "list" {
		return cmdSchemeList(args[1:], stdout)
	}
	fs := flag.NewFlagSet("scheme "+name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), schemeUsage) }
	var tf tokenFlags
	tf.register(fs)
	base := fs.String("base", "", "CKA_LABEL of the base key")
	label := fs.String("label", "", "the derived key's CKA_LABEL")
	tokenObject := fs.Bool("token-object", false, "make the derived key a token object")
	use := fs.String("usage", "", "the derived key's uses (default: the scheme's)")
	strategy := fs.String("strategy", "auto", "strategy of package derive")
	kcvMethod := kcvFlag(fs)
	wrapKey := fs.String("wrap-key", "", "print each derived key wrapped under the key with this CKA_LABEL, and destroy it")
	wrapMech := fs.String("wrap-mech", "aes-key-wrap", "wrap mechanism: "+strings.Join(batch.WrapMechNames(), ", "))
	wrapIV := fs.String("wrap-iv", "", "des3-cbc's IV, `hex` (default 8 zero bytes)")
	h := func(n, help string) *string { return fs.String(n, "", help) }
	var (
		pan, psn, option     = h("pan", "PAN, decimal digits"), h("psn", "PAN sequence number, 2 digits"), h("option", "master key derivation option: a, b or c")
		atc, r               = h("atc", "application transaction counter, 2 bytes hex"), h("r", "diversification value R, hex")
		key                  = h("key", "which session key")
		seq                  = h("seq", "SCP02 sequence counter, 2 bytes hex")
		hostCh, cardCh       = h("host-challenge", "SCP03 host challenge, hex"), h("card-challenge", "SCP03 card challenge, hex")
		m, uid, aid, sysid   = h("m", "AN10922 diversification input M, hex"), h("uid", "card UID, hex"), h("aid", "application ID, hex"), h("sysid", "system identifier, hex")
		ikid, ksn, from      = h("ikid", "DUKPT initial key ID, 8 bytes hex"), h("ksn", "DUKPT key serial number, 12 bytes hex"), fs.String("from", "bdk", "what --base is: bdk, ik or txn")
		working, workingType = h("working", "DUKPT working key usage"), fs.String("working-type", "aes128", "DUKPT working key type")
		version              = h("version", "TR-31 key block version: A, B, C or D")
		method, kdd          = h("method", "card key diversification method: emv, visa2 or kdf3"), h("kdd", "key diversification data, 10 bytes hex")
	)
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *base == "" {
		return usageError{errors.New("--base is required")}
	}
	if *tokenObject && *label == "" {
		return usageError{errors.New("--token-object needs --label, or the key could never be found again")}
	}
	u, err := parseUsage(*use)
	if err != nil {
		return err
	}
	km, err := parseKCV(*kcvMethod)
	if err != nil {
		return err
	}
	var wrap *batch.Wrap
	if *wrapKey != "" {
		if *tokenObject {
			return usageError{errors.New("--wrap-key prints the key wrapped and destroys it: no --token-object")}
		}
		m, err := batch.ParseWrapMech(*wrapMech)
		if err != nil {
			return usageError{fmt.Errorf("--wrap-mech: %v", err)}
		}
		wrap = &batch.Wrap{Mech: m}
		if *wrapIV != "" {
			if wrap.IV, err = hexFlag("wrap-iv", *wrapIV); err != nil {
				return err
			}
		}
	} else if set := setFlags(fs); set["wrap-mech"] || set["wrap-iv"] {
		return usageError{errors.New("--wrap-mech and --wrap-iv need --wrap-key")}
	}
	o := scheme.Options{Label: *label, Persistent: *tokenObject, Usage: u, Extractable: wrap != nil}
	if *strategy != "auto" {
		o.Strategy = derive.Strategy(*strategy)
	}
	hexArg := func(name, v string) ([]byte, error) {
		if v == "" {
			return nil, usageError{fmt.Errorf("--%s is required", name)}
		}
		return hexFlag(name, v)
	}

	// Parse the scheme's arguments completely before opening the token.
	var run func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error)
	var schemeName string
	// names are the keys of the JSON object printed for a scheme that makes
	// several keys.
	var names []string
	switch name {
	case "emv-mk":
		opt := emv.OptionA
		switch strings.ToLower(*option) {
		case "", "a":
		case "b":
			opt = emv.OptionB
		case "c":
			opt = emv.OptionC
		default:
			return usageError{fmt.Errorf("--option: %q is not a, b or c", *option)}
		}
		if *pan == "" {
			return usageError{errors.New("--pan is required")}
		}
		if _, err := emv.MasterKeyBlock(opt, *pan, *psn); err != nil {
			return usageError{err}
		}
		schemeName = "emv icc master key option " + opt.String()
		run = one(func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			return emv.ICCMasterKey(ctx, tok, k, opt, *pan, *psn, o)
		})
	case "emv-sk":
		var rv []byte
		switch {
		case *atc != "" && *r != "":
			return usageError{errors.New("give --atc or --r, not both")}
		case *atc != "":
			a, err := hexArg("atc", *atc)
			if err != nil {
				return err
			}
			if len(a) != 2 {
				return usageError{fmt.Errorf("--atc: the ATC is 2 bytes, not %d", len(a))}
			}
			rv = a // completed to the master key's block size below
		default:
			if rv, err = hexArg("r", *r); err != nil {
				return err
			}
		}
		schemeName = "emv common session key"
		run = one(func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			if *atc != "" {
				n := 8
				if k.Cipher() == derive.AES {
					n = 16
				}
				rv = emv.ATC(uint16(rv[0])<<8|uint16(rv[1]), n)
			}
			return emv.SessionKey(ctx, tok, k, rv, o)
		})
	case "scp02":
		keys := map[string]gp.SCP02Key{"s-enc": gp.SCP02SENC, "c-mac": gp.SCP02CMAC, "r-mac": gp.SCP02RMAC, "dek": gp.SCP02DEK, "s-dek": gp.SCP02DEK}
		k, ok := keys[strings.ToLower(*key)]
		if !ok {
			return usageError{fmt.Errorf("--key: %q is not an SCP02 session key (s-enc, c-mac, r-mac, dek)", *key)}
		}
		sq, err := hexArg("seq", *seq)
		if err != nil {
			return err
		}
		schemeName = "scp02 " + k.String()
		run = one(func(ctx context.Context, tok *derive.Token, base *derive.Key) (*scheme.Result, error) {
			return gp.SCP02SessionKey(ctx, tok, base, k, sq, o)
		})
	case "scp03":
		keys := map[string]gp.SCP03Key{"s-enc": gp.SCP03SENC, "s-mac": gp.SCP03SMAC, "s-rmac": gp.SCP03SRMAC, "s-dek": gp.SCP03SDEK, "dek": gp.SCP03SDEK}
		k, ok := keys[strings.ToLower(*key)]
		if !ok {
			return usageError{fmt.Errorf("--key: %q is not an SCP03 session key (s-enc, s-mac, s-rmac)", *key)}
		}
		hc, err := hexArg("host-challenge", *hostCh)
		if err != nil {
			return err
		}
		cc, err := hexArg("card-challenge", *cardCh)
		if err != nil {
			return err
		}
		schemeName = "scp03 " + k.String()
		run = one(func(ctx context.Context, tok *derive.Token, base *derive.Key) (*scheme.Result, error) {
			return gp.SCP03SessionKey(ctx, tok, base, k, hc, cc, o)
		})
	case "an10922":
		var mv []byte
		if *m != "" {
			if *uid != "" || *aid != "" || *sysid != "" {
				return usageError{errors.New("give --m, or --uid, --aid and --sysid, not both")}
			}
			if mv, err = hexArg("m", *m); err != nil {
				return err
			}
		} else {
			var parts [3][]byte
			for i, p := range []struct{ name, v string }{{"uid", *uid}, {"aid", *aid}, {"sysid", *sysid}} {
				if p.v == "" && i == 0 {
					return usageError{errors.New("--m or --uid is required")}
				}
				if p.v != "" {
					if parts[i], err = hexFlag(p.name, p.v); err != nil {
						return err
					}
				}
			}
			mv = an10922.Input(parts[0], parts[1], parts[2])
		}
		schemeName = "an10922 aes-128"
		run = one(func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			return an10922.DiversifyAES128(ctx, tok, k, mv, o)
		})
	case "dukpt-ik":
		id, err := hexArg("ikid", *ikid)
		if err != nil {
			return err
		}
		schemeName = "dukpt initial key"
		run = one(func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			return dukpt.InitialKey(ctx, tok, k, id, o)
		})
	case "dukpt":
		kv, err := hexArg("ksn", *ksn)
		if err != nil {
			return err
		}
		if _, err := dukpt.ParseKSN(kv); err != nil {
			return usageError{err}
		}
		var wu dukpt.KeyUsage
		if *working != "" {
			if wu, err = parseWorkingUsage(*working); err != nil {
				return err
			}
		}
		wt, ok := dukpt.KeyTypeByName(strings.ToLower(*workingType))
		if !ok {
			return usageError{fmt.Errorf("--working-type: unknown key type %q (aes128, aes192, aes256, tdes2, tdes3, hmac128, hmac192, hmac256)", *workingType)}
		}
		var f func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error)
		switch {
		case *from == "bdk" && *working != "":
			schemeName = "dukpt working key " + *working + " " + wt.String()
			f = func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.DeriveWorkingKey(ctx, tok, k, kv, wu, wt, o)
			}
		case *from == "bdk":
			schemeName = "dukpt transaction key"
			f = func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.DeriveTransactionKey(ctx, tok, k, kv, o)
			}
		case *from == "ik" && *working == "":
			schemeName = "dukpt transaction key"
			f = func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.TransactionKey(ctx, tok, k, kv, o)
			}
		case *from == "txn" && *working != "":
			schemeName = "dukpt working key " + *working + " " + wt.String()
			f = func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.WorkingKey(ctx, tok, k, kv, wu, wt, o)
			}
		case *from == "ik":
			schemeName = "dukpt working key " + *working + " " + wt.String()
			f = func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.WorkingKeyFromIK(ctx, tok, k, kv, wu, wt, o)
			}
		case *from == "txn":
			return usageError{errors.New("--from txn needs --working")}
		default:
			return usageError{fmt.Errorf("--from: %q is not bdk, ik or txn", *from)}
		}
		run = one(f)
	case "tr31":
		if *version == "" {
			return usageError{errors.New("--version is required")}
		}
		v, err := tr31.ParseVersion(*version)
		if err != nil {
			return usageError{err}
		}
		ko, ao := o, o
		if o.Label != "" {
			ko.Label, ao.Label = o.Label+"-kbek", o.Label+"-kbak"
		}
		schemeName = "tr31 " + v.String()
		names = []string{"kbek", "kbak"}
		run = func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error) {
			e, a, err := tr31.Keys(ctx, tok, k, v, ko, ao)
			if err != nil {
				return nil, err
			}
			return []*scheme.Result{e, a}, nil
		}
	case "gp-div":
		if *method == "" {
			return usageError{errors.New("--method is required (emv, visa2, kdf3)")}
		}
		m, ok := gp.MethodByName(strings.ToLower(*method))
		if !ok {
			return usageError{fmt.Errorf("--method: %q is not emv, visa2 or kdf3", *method)}
		}
		kd, err := hexArg("kdd", *kdd)
		if err != nil {
			return err
		}
		if _, err := gp.DiversificationData(m, gp.StaticENC, kd); err != nil {
			return usageError{err}
		}
		var opts [3]scheme.Options
		for i, k := range gp.StaticKeys {
			opts[i] = o
			if o.Label != "" {
				opts[i].Label = o.Label + "-" + k.String()
			}
			names = append(names, k.String())
		}
		schemeName = "gp-div " + m.String()
		run = func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error) {
			return gp.DiversifyKeys(ctx, tok, k, m, kd, opts)
		}
	default:
		return usageError{fmt.Errorf("unknown scheme %q (emv-mk, emv-sk, scp02, scp03, an10922, dukpt-ik, dukpt, tr31, gp-div)", name)}
	}

	tok, err := tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	k, err := tok.FindKey(ctx, *base)
	if err != nil {
		return err
	}
	if wrap != nil {
		if wrap.Key, err = tok.FindKey(ctx, *wrapKey); err != nil {
			return fmt.Errorf("p11derive: wrapping key: %w", err)
		}
		if err := wrap.Check(0); err != nil {
			return err
		}
	}
	if o.Persistent {
		labels := []string{o.Label}
		if name == "tr31" {
			labels = []string{o.Label + "-kbek", o.Label + "-kbak"}
		}
		for _, l := range labels {
			if err := labelFree(ctx, tok, l); err != nil {
				return err
			}
		}
	}
	results, err := run(ctx, tok, k)
	if err != nil {
		return err
	}
	var made []*derive.Key
	for _, res := range results {
		made = append(made, res.Key)
	}
	if o.Persistent {
		for i, res := range results {
			if err := ownLabel(ctx, tok, res.Key); err != nil {
				for _, other := range made[:i] {
					tok.Destroy(context.WithoutCancel(ctx), other)
				}
				for _, other := range made[i+1:] {
					tok.Destroy(context.WithoutCancel(ctx), other)
				}
				return err
			}
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
	out := make([]schemeJSON, len(results))
	for i, res := range results {
		j := describeKCV(ctx, tok, res.Key, km)
		j.KDF, j.Strategy, j.Calls, j.Warnings = res.Function, string(res.Strategy), res.Calls, append(res.Warnings, derive.BaseKeyWarnings(k)...)
		out[i] = schemeJSON{Scheme: schemeName, keyJSON: j, Derivations: res.Derivations}
		if wrap != nil {
			w, err := batch.WrapKey(ctx, tok, wrap, res.Key)
			if err != nil {
				return err
			}
			out[i].Wrapped, out[i].WrapMech, out[i].WrappedBy = hex.EncodeToString(w), wrap.Mech.Name, wrap.Key.Label
		}
		if len(res.Strategies) > 1 {
			for _, st := range res.Strategies {
				out[i].Strategies = append(out[i].Strategies, string(st))
			}
		}
	}
	if names != nil {
		m := make(map[string]schemeJSON, len(out))
		for i, n := range names {
			m[n] = out[i]
		}
		return reported(ctx, tok, printJSON(stdout, m), made...)
	}
	return reported(ctx, tok, printJSON(stdout, out[0]), made...)
}

func one(f func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error)) func(context.Context, *derive.Token, *derive.Key) ([]*scheme.Result, error) {
	return func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error) {
		res, err := f(ctx, tok, k)
		if err != nil {
			return nil, err
		}
		return []*scheme.Result{res}, nil
	}
}

func parseWorkingUsage(s string) (dukpt.KeyUsage, error) {
	names := map[string]dukpt.KeyUsage{
		"pin": dukpt.PINEncryption, "mac-gen": dukpt.MACGeneration, "mac-verify": dukpt.MACVerification,
		"mac-both": dukpt.MACBoth, "data-encrypt": dukpt.DataEncryption, "data-decrypt": dukpt.DataDecryption,
		"data-both": dukpt.DataBoth, "kek": dukpt.KeyEncryptionKey,
	}
	if u, ok := names[strings.ToLower(s)]; ok {
		return u, nil
	}
	if v, err := strconv.ParseUint(s, 16, 16); err == nil && len(s) == 4 {
		return dukpt.KeyUsage(v), nil
	}
	return 0, usageError{fmt.Errorf("--working: unknown working key usage %q (pin, mac-gen, mac-verify, mac-both, data-encrypt, data-decrypt, data-both, kek, or 4 hex digits)", s)}
}

// cmdSchemeList prints the scheme catalog, with the token's mechanism list
// when a module is given.
func cmdSchemeList(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("scheme list", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	type mechJSON struct {
		Name   string `json:"name"`
		Listed *bool  `json:"listed,omitempty"`
	}
	type entryJSON struct {
		Scheme     string     `json:"scheme"`
		Case       string     `json:"case"`
		Standard   string     `json:"standard"`
		Status     string     `json:"status"`
		Mechanisms []mechJSON `json:"mechanisms,omitempty"`
		Note       string     `json:"note,omitempty"`
	}
	var entries []scheme.EntryStatus
	// A token only when one is named on the command line: P11DERIVE_MODULE
	// alone does not make the catalog need a token.
	if tf.given("module") || tf.uri != "" || tf.label != "" || tf.slot >= 0 {
		tok, err := tf.open()
		if err != nil {
			return err
		}
		defer tok.Close()
		entries = scheme.Check(tok)
	} else {
		for _, e := range scheme.Catalog() {
			entries = append(entries, scheme.EntryStatus{Entry: e})
		}
	}
	out := make([]entryJSON, len(entries))
	for i, e := range entries {
		j := entryJSON{Scheme: e.Scheme, Case: e.Case, Standard: e.Standard, Status: string(e.Status), Note: e.Note}
		for k, m := range e.Mechanisms {
			mj := mechJSON{Name: scheme.MechanismName(m)}
			if e.Listed != nil {
				mj.Listed = &e.Listed[k]
			}
			j.Mechanisms = append(j.Mechanisms, mj)
		}
		out[i] = j
	}
	return printJSON(stdout, out)
}

// setFlags are the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
