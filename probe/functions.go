package probe

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/ref"
)

// baseKind is the kind of base key a function takes.
type baseKind int

const (
	baseAES     baseKind = iota // AES-128
	baseDES3                    // three-key Triple DES
	baseDES                     // single DES
	baseGeneric                 // 32-byte generic secret (HMAC-based functions)
	nBaseKinds
)

func (b baseKind) String() string {
	switch b {
	case baseAES:
		return "aes-128"
	case baseDES3:
		return "des3"
	case baseDES:
		return "des"
	case baseGeneric:
		return "generic-32"
	}
	return fmt.Sprintf("base(%d)", int(b))
}

// The probe's known base key values (never real keys): SP 800-38A's
// AES-128 key, SP 800-67's three TDEA keys, FIPS 81's DES key, and a
// counting generic secret.
var baseValues = [nBaseKinds][]byte{
	baseAES:     unhex("2b7e151628aed2a6abf7158809cf4f3c"),
	baseDES3:    unhex("0123456789abcdef23456789abcdef01456789abcdef0123"),
	baseDES:     unhex("0123456789abcdef"),
	baseGeneric: unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
}

// ckk is the base key's PKCS#11 type, keyType its derive.KeyType.
func (b baseKind) ckk() uint {
	switch b {
	case baseAES:
		return pkcs11.CKK_AES
	case baseDES3:
		return pkcs11.CKK_DES3
	case baseDES:
		return pkcs11.CKK_DES
	}
	return pkcs11.CKK_GENERIC_SECRET
}

func (b baseKind) keyType() derive.KeyType {
	switch b {
	case baseAES:
		return derive.KeyAES128
	case baseDES3:
		return derive.KeyDES3
	case baseDES:
		return derive.KeyDES
	}
	return derive.KeyGeneric(32)
}

// The derivation data: SP 800-38A's first plaintext block for AES, the
// first two blocks of SP 800-67's "The qufck brown fox jump" for (Triple)
// DES, and a label || 0x00 || context for the key-derivation functions.
var (
	dataAES = unhex("6bc1bee22e409f96e93d7e117393172a")
	dataDES = unhex("54686520717566636b2062726f776e20")
	dataKDF = append([]byte("p11derive probe\x00"), unhex("0011223344556677")...)
	ivAES   = "000102030405060708090a0b0c0d0e0f"
	ivDES   = "1234567890abcdef"
	ivKDF   = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
	saltKDF = "5a5b5c5d5e5f"
)

// spec is one function, with the parameters, base key and data the probe
// computes it with, and its reference.
type spec struct {
	kdf    string
	params map[string]string
	base   baseKind
	data   []byte
	out    derive.KeyType
	f      derive.Function // nil when the name does not parse (err)
	err    error
	// ref computes DK's value from the base key's value; nil when the
	// probe has no reference for the function.
	ref func(key []byte) ([]byte, error)
}

// expected is the check value DK must have when made from bk (imported,
// of known value), or nil and why not.
func (s *spec) expected(bk *baseKey) ([]byte, string) {
	noRef := "no software reference for this function"
	if bk == nil || bk.value == nil || s.ref == nil {
		return nil, noRef
	}
	dk, err := s.ref(bk.value)
	switch {
	case err != nil:
		return nil, "the software reference failed: " + err.Error()
	case len(dk) < s.out.Len():
		return nil, fmt.Sprintf("the software reference made %d bytes, not %d", len(dk), s.out.Len())
	}
	kcv, _ := ref.CheckValue(ref.AES, dk[:s.out.Len()])
	return kcv, noRef
}

// paramsKey is a canonical string of the parameters, for matching.
func paramsKey(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s;", k, p[k])
	}
	return b.String()
}

// specs returns what the probe computes for each function p11derive knows
// (derive.FunctionNames), restricted to only if not empty. A function the
// probe does not know how to call is still reported, as unavailable.
func specs(only []string) []*spec {
	want := map[string]bool{}
	for _, n := range only {
		want[strings.ToLower(strings.TrimSpace(n))] = true
	}
	var out []*spec
	for _, name := range derive.FunctionNames() {
		if len(want) > 0 && !want[name] {
			continue
		}
		for _, s := range specsFor(name) {
			s.f, s.err = derive.ParseFunction(s.kdf, s.params)
			out = append(out, s)
		}
	}
	return out
}

func specsFor(name string) []*spec {
	out := derive.KeyAES128
	if c, mode, decrypt, ok := blockFunction(name); ok {
		return []*spec{blockSpec(name, c, mode, decrypt, out)}
	}
	switch name {
	case "sp800-108-counter", "sp800-108-feedback":
		return sp800108Specs(name, out)
	case "hkdf":
		return hkdfSpecs(name, out)
	case "sha256-concat":
		s := &spec{kdf: name, out: out, base: baseGeneric, data: dataKDF}
		s.ref = func(key []byte) ([]byte, error) { return ref.SHA256Concat(key, s.data)[:out.Len()], nil }
		return []*spec{s}
	case "xor-data":
		// K XOR data, from the AES test key into an AES-128 key.
		s := &spec{kdf: name, out: out, base: baseAES, data: dataAES}
		data := s.data
		s.ref = func(key []byte) ([]byte, error) {
			x := make([]byte, out.Len())
			for i := range x {
				x[i] = key[i] ^ data[i]
			}
			return x, nil
		}
		return []*spec{s}
	}
	// A function this probe does not know: try it with AES data and an
	// AES base key, without a reference (cross-check only).
	return []*spec{{kdf: name, out: out, base: baseAES, data: dataAES}}
}

// blockSpec is the spec of a block-cipher function: cipher c ("aes",
// "des3", "des") in mode ("ecb", "cbc"), encrypting or decrypting.
func blockSpec(name, c, mode string, decrypt bool, out derive.KeyType) *spec {
	s := &spec{kdf: name, out: out, base: baseAES, data: dataAES}
	var rc ref.Cipher
	iv := ivAES
	switch c {
	case "aes":
		rc = ref.AES
	case "des3":
		rc, s.base, s.data, iv = ref.DES3, baseDES3, dataDES, ivDES
	case "des":
		rc, s.base, s.data, iv = ref.DES, baseDES, dataDES, ivDES
	}
	if mode == "cbc" {
		s.params = map[string]string{"iv": iv}
	}
	data := s.data
	s.ref = func(key []byte) ([]byte, error) {
		b, err := ref.NewBlock(rc, key)
		if err != nil {
			return nil, err
		}
		switch {
		case mode == "ecb" && !decrypt:
			return ref.EncryptECB(b, data)
		case mode == "ecb":
			return ref.DecryptECB(b, data)
		case !decrypt:
			return ref.EncryptCBC(b, unhex(iv), data)
		}
		return ref.DecryptCBC(b, unhex(iv), data)
	}
	return s
}

// sp800108Specs are the specs of an SP 800-108 function, one per PRF.
func sp800108Specs(name string, out derive.KeyType) []*spec {
	var ss []*spec
	for _, prf := range []ref.PRF{ref.HMACSHA256, ref.HMACSHA384, ref.HMACSHA512, ref.AESCMAC} {
		s := &spec{kdf: name, out: out, base: baseGeneric, data: dataKDF,
			params: map[string]string{"prf": prf.Name}}
		if prf.Name == ref.AESCMAC.Name {
			s.base = baseAES
		}
		if name == "sp800-108-feedback" {
			s.params["iv"] = ivKDF
		}
		s.ref = sp800108Ref(s, prf)
		ss = append(ss, s)
	}
	return ss
}

// hkdfSpecs are the specs of HKDF, one per hash.
func hkdfSpecs(name string, out derive.KeyType) []*spec {
	var ss []*spec
	for _, v := range []struct {
		hash string
		h    func() hash.Hash
		salt string
	}{{"sha256", sha256.New, saltKDF}, {"sha384", sha512.New384, ""}, {"sha512", sha512.New, saltKDF}} {
		s := &spec{kdf: name, out: out, base: baseGeneric, data: dataKDF, params: map[string]string{"hash": v.hash}}
		if v.salt != "" {
			s.params["salt"] = v.salt
		}
		h, salt, data := v.h, unhex(v.salt), s.data
		s.ref = func(key []byte) ([]byte, error) { return ref.HKDF(h, key, salt, data, out.Len()) }
		ss = append(ss, s)
	}
	return ss
}

// blockFunction parses the block-cipher function names: aes-ecb,
// des3-cbc-decrypt, ...
func blockFunction(name string) (c, mode string, decrypt, ok bool) {
	parts := strings.Split(name, "-")
	if len(parts) == 3 && parts[2] == "decrypt" {
		decrypt = true
		parts = parts[:2]
	}
	if len(parts) != 2 {
		return "", "", false, false
	}
	switch parts[0] {
	case "aes", "des3", "des":
	default:
		return "", "", false, false
	}
	if parts[1] != "ecb" && parts[1] != "cbc" {
		return "", "", false, false
	}
	return parts[0], parts[1], decrypt, true
}

// sp800108Ref is the reference of an SP 800-108 spec: its layout (the
// function's, or the mode's default) turned into PRF messages.
func sp800108Ref(s *spec, prf ref.PRF) func(key []byte) ([]byte, error) {
	return func(key []byte) ([]byte, error) {
		f, err := derive.ParseFunction(s.kdf, s.params)
		if err != nil {
			return nil, err
		}
		sf, ok := f.(derive.SP800108)
		if !ok {
			return nil, fmt.Errorf("%s is not an SP 800-108 function", s.kdf)
		}
		layout := sf.Layout
		if layout == nil {
			def := derive.DefaultCounterLayout
			if sf.Mode == derive.SP800108Feedback {
				def = derive.DefaultFeedbackLayout
			}
			if layout, err = derive.ParseLayout(def); err != nil {
				return nil, err
			}
		}
		n := s.out.Len()
		msg := func(i uint32, prev []byte) []byte {
			var m []byte
			for _, seg := range layout {
				switch seg.Kind {
				case derive.SegCounter:
					m = append(m, encodeInt(uint64(i), seg.Bits, seg.LittleEndian)...)
				case derive.SegChain:
					m = append(m, prev...)
				case derive.SegData:
					m = append(m, s.data...)
				case derive.SegDKM:
					m = append(m, encodeInt(uint64(n)*8, seg.Bits, seg.LittleEndian)...)
				case derive.SegBytes:
					m = append(m, seg.Bytes...)
				}
			}
			return m
		}
		if sf.Mode == derive.SP800108Feedback {
			return ref.KDFFeedback(prf, key, sf.IV, n, msg)
		}
		return ref.KDFCounter(prf, key, n, func(i uint32) []byte { return msg(i, nil) })
	}
}

func encodeInt(v uint64, bits int, le bool) []byte {
	if le {
		return ref.LE(v, bits)
	}
	return ref.BE(v, bits)
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
