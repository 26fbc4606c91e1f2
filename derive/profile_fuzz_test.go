package derive

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/mechanisms"
)

// canonical is the profile p11derive writes for the function and key
// type of r: what a profile read from anywhere comes to.
func canonical(p Profile, r Request) Profile {
	q := Profile{Version: ProfileVersion, KDF: r.Function.Name(), Strategy: p.Strategy, KeyType: r.KeyType.name(), Len: r.KeyType.n}
	r.Function.profile(&q)
	return q
}

// requireInvalidInput fails unless err is an input error (the only kind
// parsing may return).
func requireInvalidInput(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidInput) {
		t.Fatalf("error %v (%T) is not ErrInvalidInput", err, err)
	}
}

// FuzzParseProfile reads arbitrary bytes as a profile: no panic, errors are
// input errors, and a profile that parses comes, written again as
// p11derive writes it, to a fixed point that parses to itself and to the
// same function.
func FuzzParseProfile(f *testing.F) {
	for _, s := range []string{
		`{"version": 1, "kdf": "aes-cbc", "strategy": "native", "key_type": "aes", "len": 16, "params": {"iv": "000102030405060708090a0b0c0d0e0f"}}`,
		`{"version":1,"kdf":"aes-ecb","key_type":"des2","len":16}`,
		`{"version":1,"kdf":"sp800-108-feedback","strategy":"native","key_type":"generic","len":48,"params":{"iv":"00ff","layout":"chain,counter:8:le,hex:0102,data,dkm:16","prf":"hmac-sha384"}}`,
		`{"version":1,"kdf":"hkdf","key_type":"aes","len":32,"params":{"hash":"sha512","mode":"expand-only"}}`,
		`{"version":1,"kdf":"sha256-concat","key_type":"aes","len":16}`,
		`{"version":1,"kdf":"DES3-CBC-DECRYPT","key_type":"des3","len":0,"params":{"iv":"00 11 22 33 44 55 66 77"}}`,
		`{"version":2,"kdf":"aes-ecb","key_type":"aes","len":16}`,
		`{"version":1,"kdf":"aes-ecb","key_type":"aes","len":16,"extra":true}`,
		`{"version":1,"kdf":"aes-ecb","key_type":"aes","len":16,"params":{"iv":"00"}}`,
		`[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProfile(b)
		if err != nil {
			requireInvalidInput(t, err)
			return
		}
		r, err := p.Request([]byte("data"))
		if err != nil {
			t.Fatalf("ParseProfile accepted a profile whose Request fails: %v", err)
		}
		q := canonical(p, r)
		j, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseProfile(j)
		if err != nil {
			t.Fatalf("the canonical form %s of %q does not parse: %v", j, b, err)
		}
		r2, err := again.Request([]byte("data"))
		if err != nil {
			t.Fatal(err)
		}
		if q2 := canonical(again, r2); !reflect.DeepEqual(q, q2) {
			t.Fatalf("not a fixed point: %+v, then %+v", q, q2)
		}
		if r.Function.Name() != r2.Function.Name() || r.KeyType != r2.KeyType {
			t.Fatalf("%s %v became %s %v", r.Function.Name(), r.KeyType, r2.Function.Name(), r2.KeyType)
		}
	})
}

// fuzzParams reads "key=value" lines.
func fuzzParams(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// FuzzParseFunction parses arbitrary function names and parameters (the
// --kdf, --allow and function flags, and a profile's kdf and params): no
// panic, errors are input errors, and a function that parses has a profile
// that parses back to it. Its checks of data, key types and base keys do
// not panic either.
func FuzzParseFunction(f *testing.F) {
	for _, c := range [][2]string{
		{"aes-ecb", ""},
		{"AES-CBC", "iv=000102030405060708090a0b0c0d0e0f"},
		{"des-cbc-decrypt", "iv=0011223344556677"},
		{"sp800-108-counter", "prf=aes-cmac\nlayout=hex:01,counter:8,data"},
		{"sp800-108-feedback", "prf=hmac-sha512\niv=00\nlayout=chain,data"},
		{"hkdf", "hash=sha384\nmode=extract-only\nsalt=0102"},
		{"sha256-concat", "salt=00"},
		{"aes-ecb,hkdf", "iv=00"},
		{"nope", ""},
	} {
		f.Add(c[0], c[1], []byte("0123456789abcdef"), uint8(16))
	}
	f.Fuzz(func(t *testing.T, name, params string, data []byte, n uint8) {
		m := fuzzParams(params)
		if _, err := ParseAllow(name, m); err != nil {
			requireInvalidInput(t, err)
		}
		fn, err := ParseFunction(name, m)
		if err != nil {
			requireInvalidInput(t, err)
			return
		}
		var p Profile
		fn.profile(&p)
		again, err := ParseFunction(fn.Name(), p.Params)
		if err != nil {
			t.Fatalf("the profile %+v of %s does not parse: %v", p.Params, fn.Name(), err)
		}
		var q Profile
		again.profile(&q)
		if again.Name() != fn.Name() || !reflect.DeepEqual(p, q) {
			t.Fatalf("%s %+v came back as %s %+v", fn.Name(), p.Params, again.Name(), q.Params)
		}
		for _, kt := range []KeyType{KeyAES128, KeyAES256, KeyDES, KeyDES2, KeyDES3, KeyGeneric(int(n) + 1)} {
			if err := fn.validate(data, kt); err != nil {
				requireInvalidInput(t, err)
			}
		}
		for _, ckk := range []uint{pkcs11.CKK_AES, pkcs11.CKK_DES3, pkcs11.CKK_GENERIC_SECRET, pkcs11.CKK_RSA} {
			_ = fn.checkBase(&Key{Type: ckk, Label: "k"})
		}
	})
}

// FuzzParseLayout parses arbitrary SP 800-108 layouts: no panic, errors
// are input errors, and a layout that parses writes out canonically as
// itself. A function the derive package validates with it is one the
// mechanisms package can marshal: the two validations agree.
func FuzzParseLayout(f *testing.F) {
	for _, s := range []string{
		DefaultCounterLayout, DefaultFeedbackLayout, "counter:8:le, hex:0102 ,data,dkm:16:be",
		"hex:01,counter:8,data", "chain,counter:24,data,dkm:64:le", "counter", "dkm:7", "hex:", "frob", "",
	} {
		f.Add(s, []byte("label\x00context"), uint8(32), uint8(0))
	}
	f.Fuzz(func(t *testing.T, s string, data []byte, n uint8, prf uint8) {
		l, err := ParseLayout(s)
		if err != nil {
			requireInvalidInput(t, err)
			return
		}
		again, err := ParseLayout(l.String())
		if err != nil {
			t.Fatalf("%q wrote out as %q, which does not parse: %v", s, l.String(), err)
		}
		if again.String() != l.String() {
			t.Fatalf("%q: %q, then %q", s, l.String(), again.String())
		}
		kt := KeyGeneric(int(n) + 1)
		for _, mode := range []SP800108Mode{SP800108Counter, SP800108Feedback} {
			fn := SP800108{Mode: mode, PRF: []PRF{HMACSHA256, HMACSHA384, HMACSHA512, AESCMAC}[prf%4], Layout: l}
			if fn.Layout == nil {
				fn.Layout = Layout{}
			}
			if mode == SP800108Feedback && prf&4 != 0 {
				fn.IV = data
			}
			if err := fn.validate(data, kt); err != nil {
				requireInvalidInput(t, err)
				continue
			}
			var params mechanisms.Params
			if mode == SP800108Feedback {
				params = &mechanisms.SP800108FeedbackKDFParams{PRFType: fn.PRF.mechanism(), DataParams: fn.dataParams(data), IV: fn.IV}
			} else {
				params = &mechanisms.SP800108KDFParams{PRFType: fn.PRF.mechanism(), DataParams: fn.dataParams(data)}
			}
			if err := mechanisms.Call(fn.mechanism(), params, func([]*pkcs11.Mechanism) error { return nil }); err != nil {
				t.Fatalf("derive accepts %s with layout %q, the marshaller refuses it: %v", fn.Name(), l.String(), err)
			}
		}
	})
}
