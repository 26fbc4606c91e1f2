package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/an10922"
	"github.com/p11derive/p11derive/derive/dukpt"
	"github.com/p11derive/p11derive/derive/emv"
	"github.com/p11derive/p11derive/derive/gp"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/derive/tr31"
)

// schemeDef is one scheme of 'p11derive scheme': its name, its help, and
// its own flags.
type schemeDef struct {
	name string
	// summary is the scheme's lines in 'p11derive scheme -h' (after the
	// name), and the head of its own help.
	summary string
	// inputs is the synopsis of its flags ("--pan DIGITS [--psn NN]").
	inputs string
	// flags registers the scheme's flags on fs; the function it returns
	// parses them, completely and before any token call (a bad value is a
	// usageError), into what the scheme will do with options o.
	flags func(fs *flag.FlagSet) func(o scheme.Options) (*schemeRun, error)
}

// schemeRun is a scheme's command line, parsed.
type schemeRun struct {
	name string // the JSON "scheme"
	// names are the keys of the JSON object printed for a scheme that
	// makes several keys (nil: one key).
	names []string
	// inputs are the scheme's non-secret inputs, echoed in the JSON for an
	// audit trail (the PAN masked); run may add those it computes.
	inputs map[string]string
	run    func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error)
}

// oneKey is a schemeRun of a scheme that makes one key.
func oneKey(name string, inputs map[string]string, f func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error)) *schemeRun {
	return &schemeRun{name: name, inputs: inputs, run: func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error) {
		res, err := f(ctx, tok, k)
		if err != nil {
			return nil, err
		}
		return []*scheme.Result{res}, nil
	}}
}

// schemeDefs are the schemes, in the order of the help.
var schemeDefs = []schemeDef{
	{name: "emv-mk", summary: "EMV ICC master key (Book 2 A1.4): option a, b (Triple DES issuer master key) or c (AES-128/192/256)",
		inputs: "--pan DIGITS [--psn NN] [--option a|b|c]", flags: emvMKFlags},
	{name: "emv-sk", summary: "EMV common session key (Book 2 A1.3.1) from an ICC master key",
		inputs: "--atc HEX | --r HEX", flags: emvSKFlags},
	{name: "scp02", summary: "GlobalPlatform SCP02 session key from a static key",
		inputs: "--key s-enc|c-mac|r-mac|dek --seq HEX", flags: scp02Flags},
	{name: "scp03", summary: "GlobalPlatform SCP03 session key from a static key",
		inputs: "--key s-enc|s-mac|s-rmac --host-challenge HEX --card-challenge HEX", flags: scp03Flags},
	{name: "an10922", summary: "NXP AN10922 AES-128 key diversification",
		inputs: "--m HEX | --uid HEX [--aid HEX] [--sysid HEX]", flags: an10922Flags},
	{name: "dukpt-ik", summary: "X9.24-3 AES DUKPT initial key from the BDK",
		inputs: "--ikid HEX", flags: dukptIKFlags},
	{name: "dukpt", summary: "X9.24-3 AES DUKPT: from the BDK (default) or the initial key, the working key, or without\n" +
		"--working the transaction key; from the transaction key, the working key (intermediate\n" +
		"keys are session objects, destroyed on every path)",
		inputs: "--ksn HEX [--from bdk|ik|txn] [--working USAGE [--working-type TYPE]]", flags: dukptFlags},
	{name: "tr31", summary: "TR-31 / X9.143 key block protection keys KBEK and KBAK",
		inputs: "--version A|B|C|D", flags: tr31Flags},
	{name: "gp-div", summary: "a card's static GlobalPlatform keys ENC, MAC and DEK from a master key: emv (EMV CPS 1.1),\n" +
		"visa2 (VISA2; Triple DES master key), kdf3 (the SCP03 KDF; AES master key)",
		inputs: "--method emv|visa2|kdf3 --kdd HEX", flags: gpDivFlags},
}

func schemeByName(name string) *schemeDef {
	for i := range schemeDefs {
		if schemeDefs[i].name == name {
			return &schemeDefs[i]
		}
	}
	return nil
}

func schemeNames() string {
	names := make([]string, len(schemeDefs))
	for i, d := range schemeDefs {
		names[i] = d.name
	}
	return strings.Join(names, ", ")
}

// hexRequired is a required hex flag.
func hexRequired(name, v string) ([]byte, error) {
	if err := required(name, v); err != nil {
		return nil, err
	}
	return hexFlag(name, v)
}

// maskPAN masks a PAN for display: its first 6 and last 4 digits kept
// (PCI DSS's most), the rest '*'; a PAN too short for that keeps its last
// 4 only, and one of 4 digits or fewer nothing.
func maskPAN(pan string) string {
	n := len(pan)
	switch {
	case n > 10:
		return pan[:6] + strings.Repeat("*", n-10) + pan[n-4:]
	case n > 4:
		return strings.Repeat("*", n-4) + pan[n-4:]
	}
	return strings.Repeat("*", n)
}

func emvMKFlags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	pan := fs.String("pan", "", "PAN, decimal `digits`")
	psn := fs.String("psn", "", "PAN sequence number, 2 `digits` (default 00)")
	option := fs.String("option", "a", "master key derivation option: a, b (Triple DES issuer master key) or c (AES)")
	return func(o scheme.Options) (*schemeRun, error) {
		opt, ok := map[string]emv.Option{"a": emv.OptionA, "b": emv.OptionB, "c": emv.OptionC}[strings.ToLower(*option)]
		if !ok {
			return nil, usageError{fmt.Errorf("--option: %q is not a, b or c", *option)}
		}
		if err := required("pan", *pan); err != nil {
			return nil, err
		}
		if _, err := emv.MasterKeyBlock(opt, *pan, *psn); err != nil {
			return nil, usageError{err}
		}
		in := map[string]string{"pan": maskPAN(*pan), "option": opt.String()}
		if *psn != "" {
			in["psn"] = *psn
		}
		return oneKey("emv icc master key option "+opt.String(), in, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			return emv.ICCMasterKey(ctx, tok, k, opt, *pan, *psn, o)
		}), nil
	}
}

func emvSKFlags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	atc := fs.String("atc", "", "application transaction counter, 2 bytes `hex` (R is the ATC padded to the master key's block)")
	r := fs.String("r", "", "diversification value R, `hex` (the master key's block size)")
	return func(o scheme.Options) (*schemeRun, error) {
		in := map[string]string{}
		var rv []byte
		switch {
		case *atc != "" && *r != "":
			return nil, usageError{errors.New("give --atc or --r, not both")}
		case *atc != "":
			a, err := hexFlag("atc", *atc)
			if err != nil {
				return nil, err
			}
			if len(a) != 2 {
				return nil, usageError{fmt.Errorf("--atc: the ATC is 2 bytes, not %d", len(a))}
			}
			in["atc"] = fmt.Sprintf("%X", a)
			rv = a
		case *r == "":
			return nil, usageError{errors.New("--atc or --r is required")}
		default:
			var err error
			if rv, err = hexFlag("r", *r); err != nil {
				return nil, err
			}
			in["r"] = fmt.Sprintf("%X", rv)
		}
		return oneKey("emv common session key", in, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			if *atc != "" {
				n := 8
				if k.Cipher() == derive.AES {
					n = 16
				}
				rv = emv.ATC(uint16(rv[0])<<8|uint16(rv[1]), n)
				in["r"] = fmt.Sprintf("%X", rv)
			}
			return emv.SessionKey(ctx, tok, k, rv, o)
		}), nil
	}
}

func scp02Flags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	key := fs.String("key", "", "which session key: s-enc, c-mac, r-mac or dek")
	seq := fs.String("seq", "", "the sequence counter, 2 bytes `hex`")
	return func(o scheme.Options) (*schemeRun, error) {
		keys := map[string]gp.SCP02Key{"s-enc": gp.SCP02SENC, "c-mac": gp.SCP02CMAC, "r-mac": gp.SCP02RMAC, "dek": gp.SCP02DEK, "s-dek": gp.SCP02DEK}
		k, ok := keys[strings.ToLower(*key)]
		if !ok {
			return nil, usageError{fmt.Errorf("--key: %q is not an SCP02 session key (s-enc, c-mac, r-mac, dek)", *key)}
		}
		sq, err := hexRequired("seq", *seq)
		if err != nil {
			return nil, err
		}
		in := map[string]string{"key": k.String(), "seq": fmt.Sprintf("%X", sq)}
		return oneKey("scp02 "+k.String(), in, func(ctx context.Context, tok *derive.Token, base *derive.Key) (*scheme.Result, error) {
			return gp.SCP02SessionKey(ctx, tok, base, k, sq, o)
		}), nil
	}
}

func scp03Flags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	key := fs.String("key", "", "which session key: s-enc, s-mac or s-rmac")
	hostCh := fs.String("host-challenge", "", "the host challenge, `hex`")
	cardCh := fs.String("card-challenge", "", "the card challenge, `hex`")
	return func(o scheme.Options) (*schemeRun, error) {
		keys := map[string]gp.SCP03Key{"s-enc": gp.SCP03SENC, "s-mac": gp.SCP03SMAC, "s-rmac": gp.SCP03SRMAC, "s-dek": gp.SCP03SDEK, "dek": gp.SCP03SDEK}
		k, ok := keys[strings.ToLower(*key)]
		if !ok {
			return nil, usageError{fmt.Errorf("--key: %q is not an SCP03 session key (s-enc, s-mac, s-rmac)", *key)}
		}
		hc, err := hexRequired("host-challenge", *hostCh)
		if err != nil {
			return nil, err
		}
		cc, err := hexRequired("card-challenge", *cardCh)
		if err != nil {
			return nil, err
		}
		in := map[string]string{"key": k.String(), "host_challenge": fmt.Sprintf("%X", hc), "card_challenge": fmt.Sprintf("%X", cc)}
		return oneKey("scp03 "+k.String(), in, func(ctx context.Context, tok *derive.Token, base *derive.Key) (*scheme.Result, error) {
			return gp.SCP03SessionKey(ctx, tok, base, k, hc, cc, o)
		}), nil
	}
}

func an10922Flags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	m := fs.String("m", "", "the diversification input M, `hex`")
	uid := fs.String("uid", "", "the card's UID, `hex` (M is UID || AID || system identifier)")
	aid := fs.String("aid", "", "the application ID, `hex`")
	sysid := fs.String("sysid", "", "the system identifier, `hex`")
	return func(o scheme.Options) (*schemeRun, error) {
		in := map[string]string{}
		var mv []byte
		var err error
		if *m != "" {
			if *uid != "" || *aid != "" || *sysid != "" {
				return nil, usageError{errors.New("give --m, or --uid, --aid and --sysid, not both")}
			}
			if mv, err = hexFlag("m", *m); err != nil {
				return nil, err
			}
		} else {
			if *uid == "" {
				return nil, usageError{errors.New("--m or --uid is required")}
			}
			var parts [3][]byte
			for i, p := range []struct{ name, v string }{{"uid", *uid}, {"aid", *aid}, {"sysid", *sysid}} {
				if p.v != "" {
					if parts[i], err = hexFlag(p.name, p.v); err != nil {
						return nil, err
					}
					in[p.name] = fmt.Sprintf("%X", parts[i])
				}
			}
			mv = an10922.Input(parts[0], parts[1], parts[2])
		}
		in["m"] = fmt.Sprintf("%X", mv)
		return oneKey("an10922 aes-128", in, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			return an10922.DiversifyAES128(ctx, tok, k, mv, o)
		}), nil
	}
}

func dukptIKFlags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	ikid := fs.String("ikid", "", "the initial key ID, 8 bytes `hex` (BDK ID || derivation ID)")
	return func(o scheme.Options) (*schemeRun, error) {
		id, err := hexRequired("ikid", *ikid)
		if err != nil {
			return nil, err
		}
		return oneKey("dukpt initial key", map[string]string{"ikid": fmt.Sprintf("%X", id)}, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
			return dukpt.InitialKey(ctx, tok, k, id, o)
		}), nil
	}
}

func dukptFlags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	ksn := fs.String("ksn", "", "the key serial number, 12 bytes `hex`")
	from := fs.String("from", "bdk", "what --base is: bdk, ik or txn")
	working := fs.String("working", "", "the working key's usage: pin, mac-gen, mac-verify, mac-both, data-encrypt, data-decrypt, data-both, kek (or 4 hex digits)")
	workingType := fs.String("working-type", "aes128", "the working key's type: aes128, aes192, aes256, tdes2, tdes3, hmac128, hmac192, hmac256")
	return func(o scheme.Options) (*schemeRun, error) {
		kv, err := hexRequired("ksn", *ksn)
		if err != nil {
			return nil, err
		}
		if _, err := dukpt.ParseKSN(kv); err != nil {
			return nil, usageError{err}
		}
		var wu dukpt.KeyUsage
		if *working != "" {
			if wu, err = parseWorkingUsage(*working); err != nil {
				return nil, err
			}
		}
		wt, ok := dukpt.KeyTypeByName(strings.ToLower(*workingType))
		if !ok {
			return nil, usageError{fmt.Errorf("--working-type: unknown key type %q (aes128, aes192, aes256, tdes2, tdes3, hmac128, hmac192, hmac256)", *workingType)}
		}
		in := map[string]string{"ksn": fmt.Sprintf("%X", kv), "from": *from}
		wname := "dukpt working key " + *working + " " + wt.String()
		if *working != "" {
			in["working"], in["working_type"] = *working, wt.String()
		}
		type f = func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error)
		var name string
		var fn f
		switch {
		case *from == "bdk" && *working != "":
			name, fn = wname, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.DeriveWorkingKey(ctx, tok, k, kv, wu, wt, o)
			}
		case *from == "bdk":
			name, fn = "dukpt transaction key", func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.DeriveTransactionKey(ctx, tok, k, kv, o)
			}
		case *from == "ik" && *working == "":
			name, fn = "dukpt transaction key", func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.TransactionKey(ctx, tok, k, kv, o)
			}
		case *from == "ik":
			name, fn = wname, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.WorkingKeyFromIK(ctx, tok, k, kv, wu, wt, o)
			}
		case *from == "txn" && *working != "":
			name, fn = wname, func(ctx context.Context, tok *derive.Token, k *derive.Key) (*scheme.Result, error) {
				return dukpt.WorkingKey(ctx, tok, k, kv, wu, wt, o)
			}
		case *from == "txn":
			return nil, usageError{errors.New("--from txn needs --working")}
		default:
			return nil, usageError{fmt.Errorf("--from: %q is not bdk, ik or txn", *from)}
		}
		return oneKey(name, in, fn), nil
	}
}

func tr31Flags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	version := fs.String("version", "", "the key block version: A, B, C or D")
	return func(o scheme.Options) (*schemeRun, error) {
		if err := required("version", *version); err != nil {
			return nil, err
		}
		v, err := tr31.ParseVersion(*version)
		if err != nil {
			return nil, usageError{err}
		}
		ko, ao := o, o
		if o.Label != "" {
			ko.Label, ao.Label = o.Label+"-kbek", o.Label+"-kbak"
		}
		return &schemeRun{name: "tr31 " + v.String(), names: []string{"kbek", "kbak"}, inputs: map[string]string{"version": strings.ToUpper(*version)},
			run: func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error) {
				e, a, err := tr31.Keys(ctx, tok, k, v, ko, ao)
				if err != nil {
					return nil, err
				}
				return []*scheme.Result{e, a}, nil
			}}, nil
	}
}

func gpDivFlags(fs *flag.FlagSet) func(scheme.Options) (*schemeRun, error) {
	method := fs.String("method", "", "the diversification method: emv, visa2 or kdf3")
	kdd := fs.String("kdd", "", "the card's key diversification data, 10 bytes `hex`")
	return func(o scheme.Options) (*schemeRun, error) {
		if *method == "" {
			return nil, usageError{errors.New("--method is required (emv, visa2, kdf3)")}
		}
		m, ok := gp.MethodByName(strings.ToLower(*method))
		if !ok {
			return nil, usageError{fmt.Errorf("--method: %q is not emv, visa2 or kdf3", *method)}
		}
		kd, err := hexRequired("kdd", *kdd)
		if err != nil {
			return nil, err
		}
		if _, err := gp.DiversificationData(m, gp.StaticENC, kd); err != nil {
			return nil, usageError{err}
		}
		var opts [3]scheme.Options
		var names []string
		for i, k := range gp.StaticKeys {
			opts[i] = o
			if o.Label != "" {
				opts[i].Label = o.Label + "-" + k.String()
			}
			names = append(names, k.String())
		}
		return &schemeRun{name: "gp-div " + m.String(), names: names, inputs: map[string]string{"method": m.String(), "kdd": fmt.Sprintf("%X", kd)},
			run: func(ctx context.Context, tok *derive.Token, k *derive.Key) ([]*scheme.Result, error) {
				return gp.DiversifyKeys(ctx, tok, k, m, kd, opts)
			}}, nil
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
