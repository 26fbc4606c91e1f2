package mechanisms

import (
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/p11derive/p11derive/internal/cabi"
)

// compareLayout lists every difference between the marshaller's layout l and
// the C compiler's layout c: size, alignment, and the offset and size of
// every member, matched by name; members missing on either side count too.
func compareLayout(l *layout, c cabi.Struct) []string {
	var diffs []string
	if l.size != c.Size {
		diffs = append(diffs, fmt.Sprintf("%s: size %d, C says %d", l.cName, l.size, c.Size))
	}
	if l.align != c.Align {
		diffs = append(diffs, fmt.Sprintf("%s: alignment %d, C says %d", l.cName, l.align, c.Align))
	}
	if len(c.Fields) == 0 { // scalar typedef (CK_MAC_GENERAL_PARAMS)
		if len(l.fields) != 1 || l.fields[0].index != -1 {
			diffs = append(diffs, fmt.Sprintf("%s: C type is a scalar, layout has fields", l.cName))
		}
		return diffs
	}
	got := map[string]member{}
	for _, m := range l.members() {
		got[m.name] = m
	}
	for _, cf := range c.Fields {
		m, ok := got[cf.Name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s.%s: missing from layout", l.cName, cf.Name))
			continue
		}
		delete(got, cf.Name)
		if m.offset != cf.Offset || m.size != cf.Size {
			diffs = append(diffs, fmt.Sprintf("%s.%s: offset %d size %d, C says offset %d size %d",
				l.cName, cf.Name, m.offset, m.size, cf.Offset, cf.Size))
		}
	}
	for name := range got {
		diffs = append(diffs, fmt.Sprintf("%s.%s: not a C member", l.cName, name))
	}
	sort.Strings(diffs)
	return diffs
}

// TestLayoutsMatchC compares the size, alignment and every member offset of
// every structure the marshaller knows with the C compiler's view of the NSS
// headers, and checks that every C structure in the table is covered.
func TestLayoutsMatchC(t *testing.T) {
	cs := cabi.Structs()
	covered := map[string]bool{}
	for _, r := range registrations {
		l := layouts[r.t]
		c, ok := cs[l.cName]
		if !ok {
			t.Errorf("%v: C type %s not in the cabi table", r.t, l.cName)
			continue
		}
		covered[l.cName] = true
		for _, d := range compareLayout(l, c) {
			t.Error(d)
		}
	}
	for name := range cs {
		if !covered[name] {
			t.Errorf("C type %s has no Go mirror", name)
		}
	}
}

// The comparison must be able to fail: layouts with swapped or missing
// members are reported.
func TestCompareLayoutDetectsMistakes(t *testing.T) {
	cs := cabi.Structs()

	// Length and pointer of the IV in the wrong order (the C structure has
	// ulIVLen before pIV, unlike the other pairs).
	type swappedFeedback struct {
		PRFType               uint           `p11:"prfType"`
		DataParams            []PRFDataParam `p11:"len:ulNumberOfDataParams,ptr:pDataParams"`
		IV                    []byte         `p11:"ptr:pIV,len:ulIVLen"`
		AdditionalDerivedKeys []DerivedKey   `p11:"len:ulAdditionalDerivedKeys,ptr:pAdditionalDerivedKeys"`
	}
	// Two fields in the wrong order.
	type swappedHKDF struct {
		Extract          bool   `p11:"bExtract"`
		Expand           bool   `p11:"bExpand"`
		SaltType         uint   `p11:"ulSaltType"`
		PRFHashMechanism uint   `p11:"prfHashMechanism"`
		Salt             []byte `p11:"ptr:pSalt,len:ulSaltLen"`
		SaltKey          uint   `p11:"hSaltKey"`
		Info             []byte `p11:"ptr:pInfo,len:ulInfoLen"`
	}
	// A member left out.
	type missingExpand struct {
		Extract          bool   `p11:"bExtract"`
		PRFHashMechanism uint   `p11:"prfHashMechanism"`
		SaltType         uint   `p11:"ulSaltType"`
		Salt             []byte `p11:"ptr:pSalt,len:ulSaltLen"`
		SaltKey          uint   `p11:"hSaltKey"`
		Info             []byte `p11:"ptr:pInfo,len:ulInfoLen"`
	}
	// CK_BBOOL mistaken for CK_ULONG.
	type wideBool struct {
		LittleEndian uint `p11:"bLittleEndian"`
		WidthInBits  uint `p11:"ulWidthInBits"`
	}
	for _, tc := range []struct {
		t     reflect.Type
		cName string
	}{
		{reflect.TypeFor[swappedFeedback](), "CK_SP800_108_FEEDBACK_KDF_PARAMS"},
		{reflect.TypeFor[swappedHKDF](), "CK_HKDF_PARAMS"},
		{reflect.TypeFor[missingExpand](), "CK_HKDF_PARAMS"},
		{reflect.TypeFor[wideBool](), "CK_SP800_108_COUNTER_FORMAT"},
	} {
		l, err := buildLayout(tc.t, tc.cName, nil, nativeABI)
		if err != nil {
			t.Fatal(err)
		}
		diffs := compareLayout(l, cs[tc.cName])
		if len(diffs) == 0 {
			t.Errorf("%v: wrong layout of %s not detected", tc.t, tc.cName)
		}
		t.Logf("%v: %v", tc.t.Name(), diffs)
	}
}

// TestLayoutILP32 computes the layouts for a 32-bit Unix data model
// (CK_ULONG and pointers of 4 bytes, as on linux/386 and linux/arm) and
// compares them with what "gcc -m32" computes from the NSS headers. The
// table below was checked with _Static_assert(offsetof(...) == ...) under
// gcc -m32 -DNO_NSPR_10_SUPPORT.
func TestLayoutILP32(t *testing.T) {
	fld := func(name string, offset, size uintptr) cabi.Field {
		return cabi.Field{Name: name, Offset: offset, Size: size}
	}
	ilp32 := abi{ulongSize: 4, ulongAlign: 4, ptrSize: 4, ptrAlign: 4}
	want := map[string]cabi.Struct{
		"CK_ATTRIBUTE":                   {Size: 12, Align: 4, Fields: []cabi.Field{fld("type", 0, 4), fld("pValue", 4, 4), fld("ulValueLen", 8, 4)}},
		"CK_KEY_DERIVATION_STRING_DATA":  {Size: 8, Align: 4, Fields: []cabi.Field{fld("pData", 0, 4), fld("ulLen", 4, 4)}},
		"CK_AES_CBC_ENCRYPT_DATA_PARAMS": {Size: 24, Align: 4, Fields: []cabi.Field{fld("iv", 0, 16), fld("pData", 16, 4), fld("length", 20, 4)}},
		"CK_DES_CBC_ENCRYPT_DATA_PARAMS": {Size: 16, Align: 4, Fields: []cabi.Field{fld("iv", 0, 8), fld("pData", 8, 4), fld("length", 12, 4)}},
		"CK_MAC_GENERAL_PARAMS":          {Size: 4, Align: 4},
		"CK_AES_CTR_PARAMS":              {Size: 20, Align: 4, Fields: []cabi.Field{fld("ulCounterBits", 0, 4), fld("cb", 4, 16)}},
		"CK_PRF_DATA_PARAM":              {Size: 12, Align: 4, Fields: []cabi.Field{fld("type", 0, 4), fld("pValue", 4, 4), fld("ulValueLen", 8, 4)}},
		"CK_SP800_108_COUNTER_FORMAT":    {Size: 8, Align: 4, Fields: []cabi.Field{fld("bLittleEndian", 0, 1), fld("ulWidthInBits", 4, 4)}},
		"CK_SP800_108_DKM_LENGTH_FORMAT": {Size: 12, Align: 4, Fields: []cabi.Field{fld("dkmLengthMethod", 0, 4), fld("bLittleEndian", 4, 1), fld("ulWidthInBits", 8, 4)}},
		"CK_DERIVED_KEY":                 {Size: 12, Align: 4, Fields: []cabi.Field{fld("pTemplate", 0, 4), fld("ulAttributeCount", 4, 4), fld("phKey", 8, 4)}},
		"CK_SP800_108_KDF_PARAMS": {Size: 20, Align: 4, Fields: []cabi.Field{
			fld("prfType", 0, 4), fld("ulNumberOfDataParams", 4, 4), fld("pDataParams", 8, 4),
			fld("ulAdditionalDerivedKeys", 12, 4), fld("pAdditionalDerivedKeys", 16, 4)}},
		"CK_SP800_108_FEEDBACK_KDF_PARAMS": {Size: 28, Align: 4, Fields: []cabi.Field{
			fld("prfType", 0, 4), fld("ulNumberOfDataParams", 4, 4), fld("pDataParams", 8, 4),
			fld("ulIVLen", 12, 4), fld("pIV", 16, 4),
			fld("ulAdditionalDerivedKeys", 20, 4), fld("pAdditionalDerivedKeys", 24, 4)}},
		"CK_HKDF_PARAMS": {Size: 32, Align: 4, Fields: []cabi.Field{
			fld("bExtract", 0, 1), fld("bExpand", 1, 1), fld("prfHashMechanism", 4, 4), fld("ulSaltType", 8, 4),
			fld("pSalt", 12, 4), fld("ulSaltLen", 16, 4), fld("hSaltKey", 20, 4), fld("pInfo", 24, 4), fld("ulInfoLen", 28, 4)}},
	}
	if len(want) != len(registrations) {
		t.Fatalf("table has %d types, %d registered", len(want), len(registrations))
	}
	for _, r := range registrations {
		l, err := buildLayout(r.t, r.cName, r.tags, ilp32)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range compareLayout(l, want[r.cName]) {
			t.Error(d)
		}
	}
}

func TestConstantsMatchC(t *testing.T) {
	got := map[string]uint64{
		"CKK_HKDF":                                CKK_HKDF,
		"CKM_SP800_108_COUNTER_KDF":               CKM_SP800_108_COUNTER_KDF,
		"CKM_SP800_108_FEEDBACK_KDF":              CKM_SP800_108_FEEDBACK_KDF,
		"CKM_SP800_108_DOUBLE_PIPELINE_KDF":       CKM_SP800_108_DOUBLE_PIPELINE_KDF,
		"CKM_HKDF_DERIVE":                         CKM_HKDF_DERIVE,
		"CKM_HKDF_DATA":                           CKM_HKDF_DATA,
		"CKM_HKDF_KEY_GEN":                        CKM_HKDF_KEY_GEN,
		"CKF_HKDF_SALT_NULL":                      CKF_HKDF_SALT_NULL,
		"CKF_HKDF_SALT_DATA":                      CKF_HKDF_SALT_DATA,
		"CKF_HKDF_SALT_KEY":                       CKF_HKDF_SALT_KEY,
		"CK_SP800_108_ITERATION_VARIABLE":         CK_SP800_108_ITERATION_VARIABLE,
		"CK_SP800_108_OPTIONAL_COUNTER":           CK_SP800_108_OPTIONAL_COUNTER,
		"CK_SP800_108_COUNTER":                    CK_SP800_108_COUNTER,
		"CK_SP800_108_DKM_LENGTH":                 CK_SP800_108_DKM_LENGTH,
		"CK_SP800_108_BYTE_ARRAY":                 CK_SP800_108_BYTE_ARRAY,
		"CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS":     CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS,
		"CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS": CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS,
	}
	c := cabi.Constants()
	for name, v := range got {
		cv, ok := c[name]
		if !ok {
			t.Errorf("%s: not in the cabi table", name)
			continue
		}
		if v != cv {
			t.Errorf("%s = %#x, pkcs11t.h says %#x", name, v, cv)
		}
	}
}

// The mechanism table must name the right numbers for the mechanisms that
// miekg/pkcs11 defines, too.
func TestMechanismTable(t *testing.T) {
	c := cabi.Constants()
	for name, want := range map[string]reflect.Type{
		"CKM_AES_CTR":                   reflect.TypeFor[AESCTRParams](),
		"CKM_AES_CBC_ENCRYPT_DATA":      reflect.TypeFor[AESCBCEncryptDataParams](),
		"CKM_DES_CBC_ENCRYPT_DATA":      reflect.TypeFor[DESCBCEncryptDataParams](),
		"CKM_DES3_CBC_ENCRYPT_DATA":     reflect.TypeFor[DESCBCEncryptDataParams](),
		"CKM_CONCATENATE_BASE_AND_DATA": reflect.TypeFor[KeyDerivationStringData](),
		"CKM_SP800_108_COUNTER_KDF":     reflect.TypeFor[SP800108KDFParams](),
		"CKM_SP800_108_FEEDBACK_KDF":    reflect.TypeFor[SP800108FeedbackKDFParams](),
		"CKM_HKDF_DERIVE":               reflect.TypeFor[HKDFParams](),
	} {
		if got := paramTypes[uint(c[name])]; got != want {
			t.Errorf("paramTypes[%s] = %v, want %v", name, got, want)
		}
	}
}

func TestBuildLayoutRejectsBadTags(t *testing.T) {
	type noTag struct{ A uint }
	type badPair struct {
		A []byte `p11:"ptr:pA,ptr:pB"`
	}
	type badKind struct {
		A string `p11:"a"`
	}
	type outNotUint struct {
		A []byte `p11:"out:phKey"`
	}
	for _, typ := range []reflect.Type{
		reflect.TypeFor[noTag](), reflect.TypeFor[badPair](), reflect.TypeFor[badKind](), reflect.TypeFor[outNotUint](),
	} {
		if _, err := buildLayout(typ, "X", nil, nativeABI); err == nil {
			t.Errorf("%v: accepted", typ)
		}
	}
}
