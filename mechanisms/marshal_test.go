package mechanisms

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/cabi"
)

// call runs Call with an fn that checks the mechanism, reads the parameter
// back through the C definitions with decode, and (if token is not nil)
// lets token act on the decoded value like a token would. It checks that
// at most one C block is live during the call and none after it.
func call[T any](t *testing.T, mech uint, p Params, decode func([]byte) (T, error), token func(T)) T {
	t.Helper()
	var got T
	before := liveBlocks.Load()
	err := Call(mech, p, func(m []*pkcs11.Mechanism) error {
		if len(m) != 1 || m[0].Mechanism != mech {
			return fmt.Errorf("fn got %d mechanisms, first %#x", len(m), m[0].Mechanism)
		}
		if n := liveBlocks.Load() - before; n > 1 {
			t.Errorf("%d C blocks live during the call, want at most 1", n)
		}
		var err error
		got, err = decode(m[0].Parameter)
		if err == nil && token != nil {
			token(got)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if n := liveBlocks.Load() - before; n != 0 {
		t.Fatalf("%d C blocks still live after Call", n)
	}
	return got
}

// checkBuf checks a pointer/length pair read back from C.
func checkBuf(t *testing.T, what string, b cabi.Buf, want []byte) {
	t.Helper()
	if len(want) == 0 {
		if b.Ptr != 0 || b.Len != 0 {
			t.Errorf("%s: pointer %#x length %d, want NULL_PTR and 0", what, b.Ptr, b.Len)
		}
		return
	}
	if b.Ptr == 0 || b.Len != uint64(len(want)) || !bytes.Equal(b.Data, want) {
		t.Errorf("%s: pointer %#x length %d data %x, want %x", what, b.Ptr, b.Len, b.Data, want)
	}
}

func TestKeyDerivationStringData(t *testing.T) {
	for _, data := range [][]byte{[]byte("some derivation data"), nil} {
		got := call(t, pkcs11.CKM_CONCATENATE_BASE_AND_DATA, KeyDerivationStringData{Data: data},
			cabi.DecodeKeyDerivationStringData, nil)
		checkBuf(t, "pData/ulLen", got.Data, data)
	}
}

func TestCBCEncryptDataParams(t *testing.T) {
	aes := AESCBCEncryptDataParams{Data: bytes.Repeat([]byte{0xa5}, 32)}
	for i := range aes.IV {
		aes.IV[i] = byte(i + 1)
	}
	got := call(t, pkcs11.CKM_AES_CBC_ENCRYPT_DATA, aes, cabi.DecodeAESCBCEncryptDataParams, nil)
	if !bytes.Equal(got.IV, aes.IV[:]) {
		t.Errorf("iv = %x, want %x", got.IV, aes.IV)
	}
	checkBuf(t, "AES pData/length", got.Data, aes.Data)

	des := DESCBCEncryptDataParams{IV: [8]byte{8, 7, 6, 5, 4, 3, 2, 1}, Data: []byte("8 bytes!")}
	got = call(t, pkcs11.CKM_DES3_CBC_ENCRYPT_DATA, &des, cabi.DecodeDESCBCEncryptDataParams, nil)
	if !bytes.Equal(got.IV, des.IV[:]) {
		t.Errorf("iv = %x, want %x", got.IV, des.IV)
	}
	checkBuf(t, "DES pData/length", got.Data, des.Data)
}

func TestMACGeneralParams(t *testing.T) {
	got := call(t, pkcs11.CKM_SHA256_HMAC_GENERAL, MACGeneralParams(16), cabi.DecodeMACGeneralParams, nil)
	if got != 16 {
		t.Errorf("CK_MAC_GENERAL_PARAMS = %d, want 16", got)
	}
}

func TestAESCTRParams(t *testing.T) {
	p := AESCTRParams{CounterBits: 32}
	for i := range p.CB {
		p.CB[i] = byte(0xf0 + i)
	}
	got := call(t, pkcs11.CKM_AES_CTR, p, cabi.DecodeAESCTRParams, nil)
	if got.CounterBits != 32 || !bytes.Equal(got.CB, p.CB[:]) {
		t.Errorf("got %+v, want %+v", got, p)
	}
}

func TestHKDFParams(t *testing.T) {
	p := HKDFParams{
		Extract:          true,
		Expand:           true,
		PRFHashMechanism: pkcs11.CKM_SHA384,
		SaltType:         CKF_HKDF_SALT_DATA,
		Salt:             []byte("salt"),
		Info:             []byte("info string"),
	}
	got := call(t, CKM_HKDF_DERIVE, p, cabi.DecodeHKDFParams, nil)
	if got.Extract != 1 || got.Expand != 1 || got.PRFHashMechanism != pkcs11.CKM_SHA384 ||
		got.SaltType != CKF_HKDF_SALT_DATA || got.SaltKey != 0 {
		t.Errorf("got %+v", got)
	}
	checkBuf(t, "pSalt/ulSaltLen", got.Salt, p.Salt)
	checkBuf(t, "pInfo/ulInfoLen", got.Info, p.Info)

	p = HKDFParams{Extract: true, PRFHashMechanism: pkcs11.CKM_SHA256, SaltType: CKF_HKDF_SALT_KEY, SaltKey: 77}
	got = call(t, CKM_HKDF_DATA, &p, cabi.DecodeHKDFParams, nil)
	if got.Extract != 1 || got.Expand != 0 || got.SaltType != CKF_HKDF_SALT_KEY || got.SaltKey != 77 {
		t.Errorf("got %+v", got)
	}
	checkBuf(t, "pSalt/ulSaltLen", got.Salt, nil)
	checkBuf(t, "pInfo/ulInfoLen", got.Info, nil)
}

func template(label string, valueLen int) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, valueLen),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, nil), // empty value: NULL_PTR, 0
	}
}

func checkTemplate(t *testing.T, what string, got []cabi.Attribute, want []*pkcs11.Attribute) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d attributes, want %d", what, len(got), len(want))
	}
	for i, a := range want {
		if got[i].Type != uint64(a.Type) {
			t.Errorf("%s[%d].type = %#x, want %#x", what, i, got[i].Type, a.Type)
		}
		checkBuf(t, fmt.Sprintf("%s[%d].pValue/ulValueLen", what, i), got[i].Value, a.Value)
	}
}

// checkDerivedKeys compares the CK_DERIVED_KEY array read back from C with
// the Go keys, and checks that every phKey points to its own slot holding
// CK_INVALID_HANDLE.
func checkDerivedKeys(t *testing.T, got cabi.KDFParams, want []DerivedKey) {
	t.Helper()
	if got.AdditionalDerivedKeys != uint64(len(want)) || len(got.DerivedKeys) != len(want) {
		t.Fatalf("ulAdditionalDerivedKeys = %d, decoded %d, want %d", got.AdditionalDerivedKeys, len(got.DerivedKeys), len(want))
	}
	if len(want) == 0 && got.AdditionalDerivedKeyPtr != 0 {
		t.Errorf("pAdditionalDerivedKeys = %#x, want NULL_PTR", got.AdditionalDerivedKeyPtr)
	}
	seen := map[uintptr]bool{}
	for i, k := range got.DerivedKeys {
		if k.AttributeCount != uint64(len(want[i].Template)) {
			t.Errorf("key %d: ulAttributeCount = %d, want %d", i, k.AttributeCount, len(want[i].Template))
		}
		checkTemplate(t, fmt.Sprintf("key %d template", i), k.Template, want[i].Template)
		if k.PHKey == nil {
			t.Fatalf("key %d: phKey is NULL_PTR", i)
		}
		if seen[uintptr(k.PHKey)] {
			t.Errorf("key %d: phKey shared with another key", i)
		}
		seen[uintptr(k.PHKey)] = true
		if h := cabi.LoadULong(k.PHKey); h != 0 {
			t.Errorf("key %d: *phKey = %d before the call, want CK_INVALID_HANDLE", i, h)
		}
	}
}

// playToken writes handles 1000+i through every phKey, as C_DeriveKey does.
func playToken(k cabi.KDFParams) {
	for i, dk := range k.DerivedKeys {
		cabi.StoreULong(dk.PHKey, uint64(1000+i))
	}
}

func TestSP800108CounterKDF(t *testing.T) {
	p := SP800108KDFParams{
		PRFType: pkcs11.CKM_SHA256_HMAC,
		DataParams: []PRFDataParam{
			IterationVariable{Format: &CounterFormat{LittleEndian: false, WidthInBits: 32}},
			ByteArray("label"),
			ByteArray{0},
			&ByteArray{'c', 't', 'x'},
			DKMLength{Method: CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, LittleEndian: true, WidthInBits: 16},
		},
		AdditionalDerivedKeys: []DerivedKey{
			{Template: template("mac key", 32), Handle: 55},
			{Template: template("iv", 16)},
		},
	}
	got := call(t, CKM_SP800_108_COUNTER_KDF, p, cabi.DecodeSP800108KDFParams, func(k cabi.KDFParams) {
		checkDerivedKeys(t, k, p.AdditionalDerivedKeys)
		playToken(k)
	})
	if got.PRFType != pkcs11.CKM_SHA256_HMAC || got.NumberOfDataParams != 5 || len(got.DataParams) != 5 {
		t.Fatalf("got %+v", got)
	}
	d := got.DataParams
	if d[0].Type != CK_SP800_108_ITERATION_VARIABLE || d[0].Counter == nil ||
		*d[0].Counter != (cabi.CounterFormat{LittleEndian: 0, WidthInBits: 32}) {
		t.Errorf("data param 0 = %+v counter %+v", d[0], d[0].Counter)
	}
	for i, want := range map[int][]byte{1: []byte("label"), 2: {0}, 3: []byte("ctx")} {
		if d[i].Type != CK_SP800_108_BYTE_ARRAY {
			t.Errorf("data param %d type = %d", i, d[i].Type)
		}
		checkBuf(t, fmt.Sprintf("data param %d", i), d[i].Value, want)
	}
	if d[4].Type != CK_SP800_108_DKM_LENGTH || d[4].DKMLength == nil ||
		*d[4].DKMLength != (cabi.DKMLengthFormat{Method: CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, LittleEndian: 1, WidthInBits: 16}) {
		t.Errorf("data param 4 = %+v dkm %+v", d[4], d[4].DKMLength)
	}
	// The handles written by the token were copied back into the caller's
	// slice, even though p was passed by value.
	for i, k := range p.AdditionalDerivedKeys {
		if k.Handle != pkcs11.ObjectHandle(1000+i) {
			t.Errorf("AdditionalDerivedKeys[%d].Handle = %d, want %d", i, k.Handle, 1000+i)
		}
	}
}

func TestSP800108FeedbackKDF(t *testing.T) {
	p := &SP800108FeedbackKDFParams{
		PRFType: pkcs11.CKM_AES_CMAC,
		DataParams: []PRFDataParam{
			&IterationVariable{},
			OptionalCounter{Format: CounterFormat{LittleEndian: true, WidthInBits: 8}},
			ByteArray("fixed input"),
		},
		IV:                    []byte("0123456789abcdef"),
		AdditionalDerivedKeys: []DerivedKey{{Template: template("k2", 16)}},
	}
	got := call(t, CKM_SP800_108_FEEDBACK_KDF, p, cabi.DecodeSP800108FeedbackKDFParams, func(k cabi.KDFParams) {
		checkDerivedKeys(t, k, p.AdditionalDerivedKeys)
		playToken(k)
	})
	if got.PRFType != pkcs11.CKM_AES_CMAC || len(got.DataParams) != 3 {
		t.Fatalf("got %+v", got)
	}
	d := got.DataParams
	if d[0].Type != CK_SP800_108_ITERATION_VARIABLE {
		t.Errorf("data param 0 type = %d", d[0].Type)
	}
	checkBuf(t, "iteration variable pValue/ulValueLen", d[0].Value, nil)
	if d[1].Type != CK_SP800_108_OPTIONAL_COUNTER || d[1].Counter == nil ||
		*d[1].Counter != (cabi.CounterFormat{LittleEndian: 1, WidthInBits: 8}) {
		t.Errorf("data param 1 = %+v counter %+v", d[1], d[1].Counter)
	}
	checkBuf(t, "data param 2", d[2].Value, []byte("fixed input"))
	checkBuf(t, "pIV/ulIVLen", got.IV, p.IV)
	if p.AdditionalDerivedKeys[0].Handle != 1000 {
		t.Errorf("Handle = %d, want 1000", p.AdditionalDerivedKeys[0].Handle)
	}
}

func TestSP800108DoublePipelineNoExtras(t *testing.T) {
	p := SP800108KDFParams{
		PRFType:    pkcs11.CKM_SHA512_HMAC,
		DataParams: []PRFDataParam{ByteArray("L"), IterationVariable{}},
	}
	got := call(t, CKM_SP800_108_DOUBLE_PIPELINE_KDF, p, cabi.DecodeSP800108KDFParams, nil)
	if len(got.DataParams) != 2 || got.DataParams[1].Type != CK_SP800_108_ITERATION_VARIABLE {
		t.Fatalf("got %+v", got)
	}
	checkBuf(t, "iteration variable", got.DataParams[1].Value, nil)
	checkDerivedKeys(t, got, nil)
}

// TestPointersInsideOneBlock checks that every pointer of a nested
// structure points into the single C block of the call, with its data
// entirely inside it.
func TestPointersInsideOneBlock(t *testing.T) {
	p := SP800108KDFParams{
		PRFType: pkcs11.CKM_SHA256_HMAC,
		DataParams: []PRFDataParam{
			IterationVariable{Format: &CounterFormat{WidthInBits: 8}},
			ByteArray("x"),
			DKMLength{Method: CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS, WidthInBits: 32},
		},
		AdditionalDerivedKeys: []DerivedKey{{Template: template("a", 1)}, {Template: template("bb", 2)}},
	}
	before := liveBlocks.Load()
	m, err := marshal(CKM_SP800_108_COUNTER_KDF, p)
	if err != nil {
		t.Fatal(err)
	}
	defer m.free()
	if n := liveBlocks.Load() - before; n != 1 {
		t.Errorf("%d C allocations, want 1", n)
	}
	got, err := cabi.DecodeSP800108KDFParams(m.param)
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := uintptr(m.block), uintptr(m.block)+m.size
	inside := func(what string, ptr uintptr, n uintptr) {
		if ptr < lo || ptr+n > hi {
			t.Errorf("%s [%#x, %#x) outside the block [%#x, %#x)", what, ptr, ptr+n, lo, hi)
		}
	}
	inside("pDataParams", got.DataParamsPtr, uintptr(len(got.DataParams))*cabi.Structs()["CK_PRF_DATA_PARAM"].Size)
	inside("pAdditionalDerivedKeys", got.AdditionalDerivedKeyPtr, uintptr(len(got.DerivedKeys))*cabi.Structs()["CK_DERIVED_KEY"].Size)
	for i, d := range got.DataParams {
		inside(fmt.Sprintf("data param %d", i), d.Value.Ptr, uintptr(d.Value.Len))
	}
	for i, k := range got.DerivedKeys {
		inside(fmt.Sprintf("key %d template", i), k.TemplatePtr, uintptr(k.AttributeCount)*cabi.Structs()["CK_ATTRIBUTE"].Size)
		inside(fmt.Sprintf("key %d phKey", i), uintptr(k.PHKey), nativeABI.ulongSize)
		for j, a := range k.Template {
			if a.Value.Ptr != 0 {
				inside(fmt.Sprintf("key %d attribute %d", i, j), a.Value.Ptr, uintptr(a.Value.Len))
			}
		}
	}
}

func TestNoParams(t *testing.T) {
	before := liveBlocks.Load()
	called := false
	err := Call(CKM_HKDF_KEY_GEN, nil, func(m []*pkcs11.Mechanism) error {
		called = true
		if len(m) != 1 || m[0].Mechanism != CKM_HKDF_KEY_GEN || len(m[0].Parameter) != 0 {
			t.Errorf("mechanism = %+v", m[0])
		}
		return nil
	})
	if err != nil || !called {
		t.Fatalf("err %v, called %v", err, called)
	}
	if liveBlocks.Load() != before {
		t.Error("C memory allocated for a nil parameter")
	}
}

// Flat structures need no C block at all.
func TestFlatNeedsNoBlock(t *testing.T) {
	before := liveBlocks.Load()
	_ = Call(pkcs11.CKM_AES_CTR, AESCTRParams{CounterBits: 1}, func([]*pkcs11.Mechanism) error {
		if liveBlocks.Load() != before {
			t.Error("C block allocated for CK_AES_CTR_PARAMS")
		}
		return nil
	})
}

func TestInvalidParams(t *testing.T) {
	counter := &CounterFormat{WidthInBits: 32}
	okKeys := []DerivedKey{{Template: template("a", 16)}}
	for _, tc := range []struct {
		name string
		mech uint
		p    Params
		want string
	}{
		{"nil PRFDataParam", CKM_SP800_108_COUNTER_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{Format: counter}, nil}}, "nil PRFDataParam"},
		{"nil *ByteArray", uint(0x80000001),
			SP800108KDFParams{DataParams: []PRFDataParam{(*ByteArray)(nil)}}, "DataParams[0]: nil *mechanisms.ByteArray"},
		{"nil attribute", CKM_SP800_108_COUNTER_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{Format: counter}},
				AdditionalDerivedKeys: []DerivedKey{okKeys[0], {Template: []*pkcs11.Attribute{nil}}}},
			"AdditionalDerivedKeys[1].Template[0]: nil *pkcs11.Attribute"},
		{"empty ByteArray", CKM_SP800_108_COUNTER_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{Format: counter}, ByteArray{}}}, "DataParams[1]: empty ByteArray"},
		{"bad DKM method", CKM_SP800_108_COUNTER_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{Format: counter}, DKMLength{WidthInBits: 8}}}, "DKMLength.Method"},
		{"counter mode without counter format", CKM_SP800_108_COUNTER_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{}}}, "needs a Format"},
		{"feedback mode with counter format", CKM_SP800_108_FEEDBACK_KDF,
			SP800108FeedbackKDFParams{DataParams: []PRFDataParam{IterationVariable{Format: counter}}}, "must not have a Format"},
		{"no iteration variable", CKM_SP800_108_DOUBLE_PIPELINE_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{ByteArray("x")}}, "exactly 1"},
		{"two iteration variables", CKM_SP800_108_FEEDBACK_KDF,
			SP800108FeedbackKDFParams{DataParams: []PRFDataParam{IterationVariable{}, IterationVariable{}}}, "exactly 1"},
		{"optional counter in counter mode", CKM_SP800_108_COUNTER_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{Format: counter}, OptionalCounter{}}}, "OptionalCounter is not allowed"},
		{"wrong params for mechanism", CKM_SP800_108_FEEDBACK_KDF,
			SP800108KDFParams{DataParams: []PRFDataParam{IterationVariable{}}}, "takes a mechanisms.SP800108FeedbackKDFParams parameter"},
		{"params for parameterless mechanism", CKM_HKDF_KEY_GEN, MACGeneralParams(1), "takes no parameter"},
		{"nil pointer params", CKM_HKDF_DERIVE, (*HKDFParams)(nil), "nil *mechanisms.HKDFParams"},
		{"AES CBC data not a block multiple", pkcs11.CKM_AES_CBC_ENCRYPT_DATA, AESCBCEncryptDataParams{Data: make([]byte, 17)}, "multiple of the 16-byte block"},
		{"DES CBC data empty", pkcs11.CKM_DES_CBC_ENCRYPT_DATA, DESCBCEncryptDataParams{}, "multiple of the 8-byte block"},
		{"CTR counter bits 0", pkcs11.CKM_AES_CTR, AESCTRParams{}, "0 < ulCounterBits <= 128"},
		{"CTR counter bits 129", pkcs11.CKM_AES_CTR, AESCTRParams{CounterBits: 129}, "0 < ulCounterBits <= 128"},
		{"HKDF nothing to do", CKM_HKDF_DERIVE, HKDFParams{SaltType: CKF_HKDF_SALT_NULL}, "neither Extract nor Expand"},
		{"HKDF bad salt type", CKM_HKDF_DERIVE, HKDFParams{Extract: true, SaltType: 3}, "SaltType 0x3"},
		{"HKDF extract without salt type", CKM_HKDF_DERIVE, HKDFParams{Extract: true}, "SaltType is 0"},
		{"HKDF data salt missing", CKM_HKDF_DERIVE, HKDFParams{Extract: true, SaltType: CKF_HKDF_SALT_DATA}, "Salt is empty"},
		{"HKDF key salt missing", CKM_HKDF_DERIVE, HKDFParams{Extract: true, SaltType: CKF_HKDF_SALT_KEY}, "CK_INVALID_HANDLE"},
		{"HKDF null salt with data", CKM_HKDF_DERIVE, HKDFParams{Extract: true, SaltType: CKF_HKDF_SALT_NULL, Salt: []byte{1}}, "CKF_HKDF_SALT_NULL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := liveBlocks.Load()
			err := Call(tc.mech, tc.p, func([]*pkcs11.Mechanism) error {
				t.Error("fn called")
				return nil
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
			if liveBlocks.Load() != before {
				t.Error("C memory leaked")
			}
		})
	}
	if err := Call(CKM_HKDF_DERIVE, nil, func([]*pkcs11.Mechanism) error { return nil }); err == nil {
		t.Error("nil parameter accepted for CKM_HKDF_DERIVE")
	}
	if err := Call(CKM_HKDF_KEY_GEN, nil, nil); err == nil {
		t.Error("nil fn accepted")
	}
}

func kdfParams(n int) SP800108KDFParams {
	return SP800108KDFParams{
		PRFType: pkcs11.CKM_SHA256_HMAC,
		DataParams: []PRFDataParam{
			IterationVariable{Format: &CounterFormat{WidthInBits: 32}},
			ByteArray(fmt.Sprintf("label %d", n)),
		},
		AdditionalDerivedKeys: []DerivedKey{{Template: template("a", 16)}, {Template: template("b", 16)}},
	}
}

func TestFnErrorAndPanic(t *testing.T) {
	before := liveBlocks.Load()
	sentinel := errors.New("CKR_FUNCTION_FAILED")
	p := kdfParams(0)
	err := Call(CKM_SP800_108_COUNTER_KDF, p, func(m []*pkcs11.Mechanism) error {
		k, err := cabi.DecodeSP800108KDFParams(m[0].Parameter)
		if err != nil {
			t.Fatal(err)
		}
		playToken(k)
		return sentinel
	})
	if !errors.Is(err, sentinel) {
		t.Errorf("err = %v, want the error of fn", err)
	}
	if p.AdditionalDerivedKeys[1].Handle != 1001 {
		t.Errorf("Handle = %d after a failing fn, want what the token wrote", p.AdditionalDerivedKeys[1].Handle)
	}
	if liveBlocks.Load() != before {
		t.Error("C memory leaked after fn error")
	}

	func() {
		defer func() {
			if r := recover(); r != "token exploded" {
				t.Errorf("recover() = %v", r)
			}
		}()
		_ = Call(CKM_SP800_108_COUNTER_KDF, kdfParams(1), func([]*pkcs11.Mechanism) error {
			panic("token exploded")
		})
	}()
	if liveBlocks.Load() != before {
		t.Error("C memory leaked after fn panic")
	}
}

func TestConcurrentCalls(t *testing.T) {
	before := liveBlocks.Load()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				p := kdfParams(g*1000 + i)
				err := Call(CKM_SP800_108_COUNTER_KDF, &p, func(m []*pkcs11.Mechanism) error {
					k, err := cabi.DecodeSP800108KDFParams(m[0].Parameter)
					if err != nil {
						return err
					}
					if want := fmt.Sprintf("label %d", g*1000+i); string(k.DataParams[1].Value.Data) != want {
						return fmt.Errorf("label %q, want %q", k.DataParams[1].Value.Data, want)
					}
					for j, dk := range k.DerivedKeys {
						cabi.StoreULong(dk.PHKey, uint64(g*1000+i+j))
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				if p.AdditionalDerivedKeys[1].Handle != pkcs11.ObjectHandle(g*1000+i+1) {
					t.Errorf("Handle = %d", p.AdditionalDerivedKeys[1].Handle)
					return
				}
			}
		}()
	}
	wg.Wait()
	if liveBlocks.Load() != before {
		t.Error("C memory leaked")
	}
}

func BenchmarkCallSP800108Counter(b *testing.B) {
	p := kdfParams(0)
	b.ReportAllocs()
	for b.Loop() {
		if err := Call(CKM_SP800_108_COUNTER_KDF, p, func([]*pkcs11.Mechanism) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
