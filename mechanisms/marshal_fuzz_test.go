package mechanisms

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/cabi"
)

// fuzzBytes hands out the fuzzer's bytes as the values a parameter is
// built from; past the end, zeros.
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) u8() byte {
	if len(f.b) == 0 {
		return 0
	}
	v := f.b[0]
	f.b = f.b[1:]
	return v
}

func (f *fuzzBytes) bool() bool { return f.u8()&1 == 1 }

// n is a small count in [0, max).
func (f *fuzzBytes) n(max int) int { return int(f.u8()) % max }

// ulong is a CK_ULONG-sized value, mostly small.
func (f *fuzzBytes) ulong() uint {
	switch f.u8() % 4 {
	case 0:
		return uint(f.u8())
	case 1:
		return uint(f.u8()) | uint(f.u8())<<8
	}
	var b [8]byte
	for i := range b {
		b[i] = f.u8()
	}
	return uint(binary.LittleEndian.Uint64(b[:]))
}

func (f *fuzzBytes) bytes(max int) []byte {
	n := f.n(max + 1)
	out := make([]byte, n)
	for i := range out {
		out[i] = f.u8()
	}
	if n == 0 && f.bool() {
		return nil
	}
	return out
}

// mechanismFor picks the mechanism: the parameter's own, another that
// takes a different parameter, or any number (unknown mechanisms are
// passed through unchecked).
func (f *fuzzBytes) mechanismFor(own ...uint) uint {
	others := []uint{CKM_SP800_108_COUNTER_KDF, CKM_SP800_108_FEEDBACK_KDF, CKM_SP800_108_DOUBLE_PIPELINE_KDF,
		CKM_HKDF_DERIVE, CKM_HKDF_KEY_GEN, pkcs11.CKM_AES_CTR, pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_AES_ECB_ENCRYPT_DATA}
	switch k := f.u8() % 16; {
	case k < 11:
		return own[int(k)%len(own)]
	case k < 15:
		return others[f.n(len(others))]
	}
	return f.ulong()
}

func (f *fuzzBytes) counterFormat() *CounterFormat {
	return &CounterFormat{LittleEndian: f.bool(), WidthInBits: f.ulong()}
}

func (f *fuzzBytes) dataParams() []PRFDataParam {
	n := f.n(7)
	if n == 0 && f.bool() {
		return nil
	}
	dps := make([]PRFDataParam, n)
	for i := range dps {
		switch f.u8() % 12 {
		case 0:
			dps[i] = IterationVariable{}
		case 1:
			dps[i] = IterationVariable{Format: f.counterFormat()}
		case 2:
			dps[i] = &IterationVariable{Format: f.counterFormat()}
		case 3:
			dps[i] = OptionalCounter{Format: *f.counterFormat()}
		case 4:
			dps[i] = DKMLength{Method: uint(f.n(4)), LittleEndian: f.bool(), WidthInBits: f.ulong()}
		case 5, 6:
			dps[i] = ByteArray(f.bytes(64))
		case 7:
			b := ByteArray(f.bytes(16))
			dps[i] = &b
		case 8:
			dps[i] = nil
		case 9:
			dps[i] = (*ByteArray)(nil)
		case 10:
			dps[i] = (*IterationVariable)(nil)
		case 11:
			dps[i] = &OptionalCounter{Format: *f.counterFormat()}
		}
	}
	return dps
}

func (f *fuzzBytes) derivedKeys() []DerivedKey {
	n := f.n(4)
	keys := make([]DerivedKey, n)
	for i := range keys {
		m := f.n(6)
		for j := 0; j < m; j++ {
			switch f.u8() % 5 {
			case 0:
				keys[i].Template = append(keys[i].Template, nil)
			case 1:
				keys[i].Template = append(keys[i].Template, &pkcs11.Attribute{Type: f.ulong()})
			default:
				keys[i].Template = append(keys[i].Template, pkcs11.NewAttribute(f.ulong(), f.bytes(40)))
			}
		}
	}
	return keys
}

// params builds a parameter of any type, as a value, a pointer or a nil
// pointer, and the mechanism to pass it with.
func (f *fuzzBytes) params() (uint, Params) {
	var mech uint
	var p Params
	switch f.u8() % 9 {
	case 0:
		v := KeyDerivationStringData{Data: f.bytes(300)}
		mech, p = f.mechanismFor(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, pkcs11.CKM_DES3_ECB_ENCRYPT_DATA, pkcs11.CKM_CONCATENATE_BASE_AND_DATA, pkcs11.CKM_XOR_BASE_AND_DATA), v
		if f.bool() {
			p = &v
		}
	case 1:
		v := AESCBCEncryptDataParams{Data: f.bytes(80)}
		copy(v.IV[:], f.bytes(16))
		mech, p = f.mechanismFor(pkcs11.CKM_AES_CBC_ENCRYPT_DATA), v
		if f.bool() {
			p = &v
		}
	case 2:
		v := DESCBCEncryptDataParams{Data: f.bytes(40)}
		copy(v.IV[:], f.bytes(8))
		mech, p = f.mechanismFor(pkcs11.CKM_DES_CBC_ENCRYPT_DATA, pkcs11.CKM_DES3_CBC_ENCRYPT_DATA), v
		if f.bool() {
			p = &v
		}
	case 3:
		mech, p = f.mechanismFor(pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_DES3_MAC_GENERAL, pkcs11.CKM_SHA256_HMAC_GENERAL), MACGeneralParams(f.ulong())
	case 4:
		v := AESCTRParams{CounterBits: f.ulong()}
		copy(v.CB[:], f.bytes(16))
		mech, p = f.mechanismFor(pkcs11.CKM_AES_CTR), v
		if f.bool() {
			p = &v
		}
	case 5:
		v := SP800108KDFParams{PRFType: f.ulong(), DataParams: f.dataParams(), AdditionalDerivedKeys: f.derivedKeys()}
		mech, p = f.mechanismFor(CKM_SP800_108_COUNTER_KDF, CKM_SP800_108_DOUBLE_PIPELINE_KDF), v
		if f.bool() {
			p = &v
		}
	case 6:
		v := SP800108FeedbackKDFParams{PRFType: f.ulong(), DataParams: f.dataParams(), IV: f.bytes(48), AdditionalDerivedKeys: f.derivedKeys()}
		mech, p = f.mechanismFor(CKM_SP800_108_FEEDBACK_KDF), v
		if f.bool() {
			p = &v
		}
	case 7:
		v := HKDFParams{
			Extract:          f.bool(),
			Expand:           f.bool(),
			PRFHashMechanism: f.ulong(),
			SaltType:         []uint{0, CKF_HKDF_SALT_NULL, CKF_HKDF_SALT_DATA, CKF_HKDF_SALT_KEY, 8}[f.n(5)],
			Salt:             f.bytes(64),
			SaltKey:          pkcs11.ObjectHandle(f.n(3)),
			Info:             f.bytes(64),
		}
		mech, p = f.mechanismFor(CKM_HKDF_DERIVE, CKM_HKDF_DATA), v
		if f.bool() {
			p = &v
		}
	case 8:
		mech = f.mechanismFor(CKM_HKDF_KEY_GEN, pkcs11.CKM_AES_ECB)
	}
	if p != nil && f.u8() == 0xFF {
		// A typed nil pointer.
		switch p.(type) {
		case *SP800108KDFParams:
			p = (*SP800108KDFParams)(nil)
		case *HKDFParams:
			p = (*HKDFParams)(nil)
		}
	}
	return mech, p
}

var errFuzzToken = errors.New("CKR_DEVICE_ERROR")

type fuzzPanic struct{}

// FuzzCall marshals parameters of every type built from arbitrary bytes,
// with the right mechanism or another, and hands them to an fn that reads
// them back through the C definitions (package cabi), writes the handles a
// token would, and returns, fails or panics. Call must never crash, must
// refuse what it cannot marshal before calling fn, must lay out exactly the
// Go value, and must leave no C block live afterwards (liveBlocks).
func FuzzCall(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x00\x00\x10\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("\x05\x01\x00\x20\x03\x00\x01\x20\x05\x05abcde\x04\x01\x00\x20\x01\x02\x03\x00\x01\x00\x01\x11\x10\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("\x06\x00\x42\x03\x00\x00\x06\x03xyz\x03\x01\x00\x08\x10\x00"))
	f.Add([]byte("\x07\x01\x01\x00\x50\x02\x04salt\x00\x05hello\x00"))
	f.Add([]byte("\x04\x00\x80\x10\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x00\x02"))
	f.Fuzz(func(t *testing.T, in []byte) {
		fb := &fuzzBytes{in}
		mech, p := fb.params()
		mode := fb.u8() % 3
		before := liveBlocks.Load()
		called := false
		var written []uint64
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					if _, ok := r.(fuzzPanic); !ok {
						panic(r)
					}
					err = errFuzzToken
				}
			}()
			return Call(mech, p, func(m []*pkcs11.Mechanism) error {
				called = true
				if n := liveBlocks.Load() - before; n > 1 {
					t.Fatalf("%d C blocks live during the call, want at most 1", n)
				}
				if len(m) != 1 || m[0].Mechanism != mech {
					t.Fatalf("fn got %+v, want one mechanism %#x", m, mech)
				}
				written = checkLaidOut(t, m[0].Parameter, p)
				switch mode {
				case 1:
					return errFuzzToken
				case 2:
					panic(fuzzPanic{})
				}
				return nil
			})
		}()
		if n := liveBlocks.Load() - before; n != 0 {
			t.Fatalf("%d C blocks leaked (%T, mechanism %#x, err %v)", n, p, mech, err)
		}
		switch {
		case !called && err == nil:
			t.Fatalf("Call returned nil without calling fn")
		case !called:
			// Refused before fn: a marshalling error.
			if errors.Is(err, errFuzzToken) {
				t.Fatalf("fn's error without fn: %v", err)
			}
			return
		case mode == 0 && err != nil:
			t.Fatalf("fn succeeded, Call returned %v", err)
		case mode != 0 && !errors.Is(err, errFuzzToken):
			t.Fatalf("fn failed, Call returned %v", err)
		}
		// Handles the token wrote are copied back, unless fn panicked.
		if mode != 2 {
			for i, h := range written {
				if got := derivedKeysOf(p)[i].Handle; uint64(got) != h {
					t.Fatalf("AdditionalDerivedKeys[%d].Handle = %d, the token wrote %d", i, got, h)
				}
			}
		}
	})
}

// derivedKeysOf returns the additional derived keys of p, if it has any.
func derivedKeysOf(p Params) []DerivedKey {
	switch v := p.(type) {
	case SP800108KDFParams:
		return v.AdditionalDerivedKeys
	case *SP800108KDFParams:
		return v.AdditionalDerivedKeys
	case SP800108FeedbackKDFParams:
		return v.AdditionalDerivedKeys
	case *SP800108FeedbackKDFParams:
		return v.AdditionalDerivedKeys
	}
	return nil
}

// checkLaidOut reads param back through the C definitions and compares it
// with p. For SP 800-108 parameters it writes a handle through every phKey,
// as a token does, and returns them.
func checkLaidOut(t *testing.T, param []byte, p Params) []uint64 {
	t.Helper()
	eq := func(what string, b cabi.Buf, want []byte) {
		t.Helper()
		if len(want) == 0 {
			if b.Ptr != 0 || b.Len != 0 {
				t.Fatalf("%s: %#x/%d, want NULL_PTR/0", what, b.Ptr, b.Len)
			}
			return
		}
		if b.Ptr == 0 || b.Len != uint64(len(want)) || !bytes.Equal(b.Data, want) {
			t.Fatalf("%s: %x (%d), want %x", what, b.Data, b.Len, want)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	switch v := deref(p).(type) {
	case nil:
		if len(param) != 0 {
			t.Fatalf("%d bytes of parameter for none", len(param))
		}
	case KeyDerivationStringData:
		got, err := cabi.DecodeKeyDerivationStringData(param)
		must(err)
		eq("pData", got.Data, v.Data)
	case AESCBCEncryptDataParams:
		got, err := cabi.DecodeAESCBCEncryptDataParams(param)
		must(err)
		eq("pData", got.Data, v.Data)
		if !bytes.Equal(got.IV, v.IV[:]) {
			t.Fatalf("iv %x, want %x", got.IV, v.IV)
		}
	case DESCBCEncryptDataParams:
		got, err := cabi.DecodeDESCBCEncryptDataParams(param)
		must(err)
		eq("pData", got.Data, v.Data)
		if !bytes.Equal(got.IV, v.IV[:]) {
			t.Fatalf("iv %x, want %x", got.IV, v.IV)
		}
	case MACGeneralParams:
		got, err := cabi.DecodeMACGeneralParams(param)
		must(err)
		if got != uint64(v) {
			t.Fatalf("CK_MAC_GENERAL_PARAMS %d, want %d", got, v)
		}
	case AESCTRParams:
		got, err := cabi.DecodeAESCTRParams(param)
		must(err)
		if got.CounterBits != uint64(v.CounterBits) || !bytes.Equal(got.CB, v.CB[:]) {
			t.Fatalf("got %+v, want %+v", got, v)
		}
	case HKDFParams:
		got, err := cabi.DecodeHKDFParams(param)
		must(err)
		if (got.Extract == 1) != v.Extract || (got.Expand == 1) != v.Expand || got.PRFHashMechanism != uint64(v.PRFHashMechanism) ||
			got.SaltType != uint64(v.SaltType) || got.SaltKey != uint64(v.SaltKey) {
			t.Fatalf("got %+v, want %+v", got, v)
		}
		eq("pSalt", got.Salt, v.Salt)
		eq("pInfo", got.Info, v.Info)
	case SP800108KDFParams:
		got, err := cabi.DecodeSP800108KDFParams(param)
		must(err)
		return checkKDF(t, got, v.PRFType, v.DataParams, nil, v.AdditionalDerivedKeys, false)
	case SP800108FeedbackKDFParams:
		got, err := cabi.DecodeSP800108FeedbackKDFParams(param)
		must(err)
		eq("pIV", got.IV, v.IV)
		return checkKDF(t, got, v.PRFType, v.DataParams, v.IV, v.AdditionalDerivedKeys, true)
	default:
		t.Fatalf("unexpected parameter %T", v)
	}
	return nil
}

func deref(p Params) any {
	switch v := p.(type) {
	case *KeyDerivationStringData:
		return *v
	case *AESCBCEncryptDataParams:
		return *v
	case *DESCBCEncryptDataParams:
		return *v
	case *AESCTRParams:
		return *v
	case *HKDFParams:
		return *v
	case *SP800108KDFParams:
		return *v
	case *SP800108FeedbackKDFParams:
		return *v
	case nil:
		return nil
	}
	return p
}

func checkKDF(t *testing.T, got cabi.KDFParams, prf uint, dps []PRFDataParam, iv []byte, keys []DerivedKey, feedback bool) []uint64 {
	t.Helper()
	if got.PRFType != uint64(prf) || len(got.DataParams) != len(dps) || got.NumberOfDataParams != uint64(len(dps)) {
		t.Fatalf("prfType %#x, %d data params, want %#x, %d", got.PRFType, len(got.DataParams), prf, len(dps))
	}
	for i, d := range dps {
		g := got.DataParams[i]
		what := fmt.Sprintf("DataParams[%d]", i)
		var want prfData
		var err error
		switch d := d.(type) {
		case *ByteArray:
			want, err = (*d).prfData()
		case *IterationVariable:
			want, err = (*d).prfData()
		case *OptionalCounter:
			want, err = (*d).prfData()
		default:
			want, err = d.prfData()
		}
		if err != nil {
			t.Fatalf("%s was marshalled, but is invalid: %v", what, err)
		}
		if g.Type != uint64(want.Type) {
			t.Fatalf("%s: type %#x, want %#x", what, g.Type, want.Type)
		}
		switch w := want.Value.(type) {
		case nil:
			if g.Value.Ptr != 0 || g.Value.Len != 0 {
				t.Fatalf("%s: pValue %#x/%d, want NULL_PTR/0", what, g.Value.Ptr, g.Value.Len)
			}
		case []byte:
			if !bytes.Equal(g.Value.Data, w) || g.Value.Len != uint64(len(w)) {
				t.Fatalf("%s: %x, want %x", what, g.Value.Data, w)
			}
		case *CounterFormat:
			if g.Counter == nil || g.Counter.WidthInBits != uint64(w.WidthInBits) || (g.Counter.LittleEndian == 1) != w.LittleEndian {
				t.Fatalf("%s: counter %+v, want %+v", what, g.Counter, w)
			}
		case *DKMLength:
			if g.DKMLength == nil || g.DKMLength.Method != uint64(w.Method) || g.DKMLength.WidthInBits != uint64(w.WidthInBits) ||
				(g.DKMLength.LittleEndian == 1) != w.LittleEndian {
				t.Fatalf("%s: DKM length %+v, want %+v", what, g.DKMLength, w)
			}
		}
	}
	if len(got.DerivedKeys) != len(keys) || got.AdditionalDerivedKeys != uint64(len(keys)) {
		t.Fatalf("%d additional keys, want %d", len(got.DerivedKeys), len(keys))
	}
	var written []uint64
	for i, k := range keys {
		g := got.DerivedKeys[i]
		if len(g.Template) != len(k.Template) {
			t.Fatalf("key %d: %d attributes, want %d", i, len(g.Template), len(k.Template))
		}
		for j, a := range k.Template {
			if g.Template[j].Type != uint64(a.Type) || !bytes.Equal(g.Template[j].Value.Data, a.Value) || g.Template[j].Value.Len != uint64(len(a.Value)) {
				t.Fatalf("key %d attribute %d: %+v, want %+v", i, j, g.Template[j], a)
			}
		}
		if g.PHKey == nil {
			t.Fatalf("key %d: phKey is NULL_PTR", i)
		}
		h := uint64(0x7000 + i)
		cabi.StoreULong(g.PHKey, h)
		written = append(written, h)
	}
	return written
}
