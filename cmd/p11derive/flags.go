package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/p11derive/p11derive/derive"
)

// funcFlags are the flags that say what to derive from which key: the base
// key, the function and its parameters, DK's type, the strategy, the
// substitutes and the profiles. derive and batch take them.
type funcFlags struct {
	base                          keyFlags
	kdf, keyType, strategy, allow string
	n                             int
	profileOut, profileIn         string
	strict                        bool
	// params are the function parameters, shared by --kdf and --allow,
	// under their profile names.
	params map[string]*string
}

func (f *funcFlags) register(fs *flag.FlagSet) {
	f.base.register(fs, "base", "base-id", "the base key K")
	fs.StringVar(&f.kdf, "kdf", "", "function: "+strings.Join(derive.FunctionNames(), ", "))
	fs.StringVar(&f.keyType, "key-type", "", "DK's type: aes, des, des2, des3, generic")
	fs.IntVar(&f.n, "len", 0, "DK's length in `bytes` (aes: 16, 24, 32; generic: any)")
	fs.StringVar(&f.strategy, "strategy", "auto", "strategy: auto, native, mac-unwrap, cmac-unwrap, stream-unwrap, unwrap")
	fs.StringVar(&f.allow, "allow", "", "substitute functions accepted, in order, when the token cannot compute --kdf (`KDF[,KDF...]`)")
	fs.StringVar(&f.profileOut, "profile-out", "", "write the derivation's profile (JSON) to `file`")
	fs.StringVar(&f.profileIn, "profile-in", "", "derive with the function and key type of a profile `file`, and nothing else")
	fs.BoolVar(&f.strict, "strict-attributes", false, "refuse a DK the token made readable or extractable against the template, rather than tightening it (C_SetAttributeValue) with a warning")
	f.params = map[string]*string{
		"iv":     fs.String("iv", "", "CBC IV, or SP 800-108 feedback IV, `hex`"),
		"prf":    fs.String("prf", "", "SP 800-108 PRF: hmac-sha256, hmac-sha384, hmac-sha512, aes-cmac"),
		"layout": fs.String("layout", "", "SP 800-108 data layout, e.g. counter:32,data,dkm:32"),
		"hash":   fs.String("hash", "", "HKDF hash: sha256, sha384, sha512"),
		"salt":   fs.String("salt", "", "HKDF salt, `hex`"),
		"mode":   fs.String("hkdf-mode", "", "HKDF mode: extract-expand, expand-only"),
	}
}

// funcSpec is what the function flags say, parsed: the function by name and
// parameters (so that a batch row may give its own iv), the function
// itself, DK's type, the substitutes and the strategy.
type funcSpec struct {
	kdf      string
	params   map[string]string
	fn       derive.Function
	kt       derive.KeyType
	allow    string
	subs     []derive.Function
	strategy derive.Strategy
	strict   bool // --strict-attributes
}

// spec parses the function flags: from --profile-in, or from --kdf, its
// parameters, --key-type, --len and --allow.
func (f *funcFlags) spec() (*funcSpec, error) {
	pm := map[string]string{}
	for k, v := range f.params {
		if *v != "" {
			pm[k] = *v
		}
	}
	s := &funcSpec{}
	if f.profileIn != "" {
		if f.kdf != "" || f.keyType != "" || f.n != 0 || f.allow != "" || len(pm) > 0 {
			return nil, usageError{errors.New("--profile-in fixes the function, its parameters and the key type: give none of --kdf, --key-type, --len, --allow or function parameters")}
		}
		b, err := os.ReadFile(f.profileIn)
		if err != nil {
			return nil, fmt.Errorf("p11derive: reading the profile: %w", err)
		}
		p, err := derive.ParseProfile(b)
		if err != nil {
			return nil, err
		}
		r, err := p.Request(nil)
		if err != nil {
			return nil, err
		}
		s.kdf, s.params, s.fn, s.kt = p.KDF, p.Params, r.Function, r.KeyType
	} else {
		if err := required("kdf", f.kdf, "key-type", f.keyType); err != nil {
			return nil, err
		}
		fn, err := derive.ParseFunction(f.kdf, pm)
		if err != nil {
			return nil, usageError{err}
		}
		kt, err := derive.ParseKeyType(f.keyType, f.n)
		if err != nil {
			return nil, usageError{err}
		}
		subs, err := derive.ParseAllow(f.allow, pm)
		if err != nil {
			return nil, usageError{err}
		}
		s.kdf, s.params, s.fn, s.kt, s.allow, s.subs = f.kdf, pm, fn, kt, f.allow, subs
	}
	if f.strategy != "auto" {
		s.strategy = derive.Strategy(f.strategy)
	}
	s.strict = f.strict
	return s, nil
}

// request is the derivation request for data.
func (s *funcSpec) request(data []byte) derive.Request {
	return derive.Request{Function: s.fn, Data: data, KeyType: s.kt, Allow: s.subs, Strategy: s.strategy, StrictAttributes: s.strict}
}
