// Package cabi exposes the C view of the PKCS #11 mechanism parameter
// structures mirrored by package mechanisms, as compiled by this platform's
// C compiler from the NSS PKCS #11 headers (pkcs11.h / pkcs11t.h).
//
// It exists for tests only: cgo cannot be used in _test.go files, so the
// tests of package mechanisms use this package to obtain
//
//   - sizeof, alignof and offsetof of every structure and member (Structs),
//     computed by the C compiler with the offsetof macro;
//   - the same information as cgo translated it (CgoStructs), which lists
//     every member of the structure and therefore proves that the Structs
//     table omits none;
//   - the values of the PKCS #11 constants (Constants);
//   - decoders that read marshalled parameter bytes back through the C
//     structure definitions, follow the embedded pointers and return plain Go
//     values, and StoreULong, which lets a test play the token and write
//     through an output pointer such as CK_DERIVED_KEY.phKey.
//
// Building this package requires the NSS and NSPR development headers
// (Debian: libnss3-dev, libnspr4-dev) in /usr/include/nss and /usr/include/nspr.
package cabi

/*
#cgo CFLAGS: -I/usr/include/nss -I/usr/include/nspr
#include <stddef.h>
#include <stdlib.h>
#include <pkcs11.h>

typedef struct {
	const char *name;
	size_t size;
	size_t align;
} cabi_struct;

typedef struct {
	const char *strct;
	const char *name;
	size_t offset;
	size_t size;
} cabi_field;

#define CABI_S(T) { #T, sizeof(T), __alignof__(T) }
#define CABI_F(T, f) { #T, #f, offsetof(T, f), sizeof(((T *)0)->f) }

static const cabi_struct cabi_structs[] = {
	CABI_S(CK_ATTRIBUTE),
	CABI_S(CK_KEY_DERIVATION_STRING_DATA),
	CABI_S(CK_AES_CBC_ENCRYPT_DATA_PARAMS),
	CABI_S(CK_DES_CBC_ENCRYPT_DATA_PARAMS),
	CABI_S(CK_MAC_GENERAL_PARAMS),
	CABI_S(CK_AES_CTR_PARAMS),
	CABI_S(CK_PRF_DATA_PARAM),
	CABI_S(CK_SP800_108_COUNTER_FORMAT),
	CABI_S(CK_SP800_108_DKM_LENGTH_FORMAT),
	CABI_S(CK_DERIVED_KEY),
	CABI_S(CK_SP800_108_KDF_PARAMS),
	CABI_S(CK_SP800_108_FEEDBACK_KDF_PARAMS),
	CABI_S(CK_HKDF_PARAMS),
};

static const cabi_field cabi_fields[] = {
	CABI_F(CK_ATTRIBUTE, type),
	CABI_F(CK_ATTRIBUTE, pValue),
	CABI_F(CK_ATTRIBUTE, ulValueLen),

	CABI_F(CK_KEY_DERIVATION_STRING_DATA, pData),
	CABI_F(CK_KEY_DERIVATION_STRING_DATA, ulLen),

	CABI_F(CK_AES_CBC_ENCRYPT_DATA_PARAMS, iv),
	CABI_F(CK_AES_CBC_ENCRYPT_DATA_PARAMS, pData),
	CABI_F(CK_AES_CBC_ENCRYPT_DATA_PARAMS, length),

	CABI_F(CK_DES_CBC_ENCRYPT_DATA_PARAMS, iv),
	CABI_F(CK_DES_CBC_ENCRYPT_DATA_PARAMS, pData),
	CABI_F(CK_DES_CBC_ENCRYPT_DATA_PARAMS, length),

	CABI_F(CK_AES_CTR_PARAMS, ulCounterBits),
	CABI_F(CK_AES_CTR_PARAMS, cb),

	CABI_F(CK_PRF_DATA_PARAM, type),
	CABI_F(CK_PRF_DATA_PARAM, pValue),
	CABI_F(CK_PRF_DATA_PARAM, ulValueLen),

	CABI_F(CK_SP800_108_COUNTER_FORMAT, bLittleEndian),
	CABI_F(CK_SP800_108_COUNTER_FORMAT, ulWidthInBits),

	CABI_F(CK_SP800_108_DKM_LENGTH_FORMAT, dkmLengthMethod),
	CABI_F(CK_SP800_108_DKM_LENGTH_FORMAT, bLittleEndian),
	CABI_F(CK_SP800_108_DKM_LENGTH_FORMAT, ulWidthInBits),

	CABI_F(CK_DERIVED_KEY, pTemplate),
	CABI_F(CK_DERIVED_KEY, ulAttributeCount),
	CABI_F(CK_DERIVED_KEY, phKey),

	CABI_F(CK_SP800_108_KDF_PARAMS, prfType),
	CABI_F(CK_SP800_108_KDF_PARAMS, ulNumberOfDataParams),
	CABI_F(CK_SP800_108_KDF_PARAMS, pDataParams),
	CABI_F(CK_SP800_108_KDF_PARAMS, ulAdditionalDerivedKeys),
	CABI_F(CK_SP800_108_KDF_PARAMS, pAdditionalDerivedKeys),

	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, prfType),
	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, ulNumberOfDataParams),
	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, pDataParams),
	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, ulIVLen),
	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, pIV),
	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, ulAdditionalDerivedKeys),
	CABI_F(CK_SP800_108_FEEDBACK_KDF_PARAMS, pAdditionalDerivedKeys),

	CABI_F(CK_HKDF_PARAMS, bExtract),
	CABI_F(CK_HKDF_PARAMS, bExpand),
	CABI_F(CK_HKDF_PARAMS, prfHashMechanism),
	CABI_F(CK_HKDF_PARAMS, ulSaltType),
	CABI_F(CK_HKDF_PARAMS, pSalt),
	CABI_F(CK_HKDF_PARAMS, ulSaltLen),
	CABI_F(CK_HKDF_PARAMS, hSaltKey),
	CABI_F(CK_HKDF_PARAMS, pInfo),
	CABI_F(CK_HKDF_PARAMS, ulInfoLen),
};

static size_t cabi_nstructs(void) { return sizeof cabi_structs / sizeof cabi_structs[0]; }
static cabi_struct cabi_struct_at(size_t i) { return cabi_structs[i]; }
static size_t cabi_nfields(void) { return sizeof cabi_fields / sizeof cabi_fields[0]; }
static cabi_field cabi_field_at(size_t i) { return cabi_fields[i]; }
*/
import "C"

import (
	"fmt"
	"reflect"
	"unsafe"
)

// Field is one member of a C structure.
type Field struct {
	Name   string  // member name as spelled in pkcs11t.h
	Offset uintptr // offsetof(struct, member)
	Size   uintptr // sizeof(member)
}

// Struct is the C layout of one PKCS #11 type. Fields are in declaration
// order. For a type that is not a structure (CK_MAC_GENERAL_PARAMS), Fields
// is empty.
type Struct struct {
	Name   string
	Size   uintptr
	Align  uintptr
	Fields []Field
}

// Structs returns the layout of every covered PKCS #11 type as computed by
// the C compiler (sizeof, __alignof__, offsetof), keyed by C type name.
func Structs() map[string]Struct {
	out := make(map[string]Struct)
	for i := C.size_t(0); i < C.cabi_nstructs(); i++ {
		s := C.cabi_struct_at(i)
		name := C.GoString(s.name)
		out[name] = Struct{Name: name, Size: uintptr(s.size), Align: uintptr(s.align)}
	}
	for i := C.size_t(0); i < C.cabi_nfields(); i++ {
		f := C.cabi_field_at(i)
		name := C.GoString(f.strct)
		s, ok := out[name]
		if !ok {
			panic("cabi: field table names unknown struct " + name)
		}
		s.Fields = append(s.Fields, Field{Name: C.GoString(f.name), Offset: uintptr(f.offset), Size: uintptr(f.size)})
		out[name] = s
	}
	return out
}

// CgoStructs returns the layout of the same types as cgo translated them
// (from the compiler's debug information). Unlike Structs, it lists every
// member of each structure, so comparing the two proves that the offsetof
// table in Structs is complete. cgo renames members that are Go keywords
// ("type" becomes "_type"); the names returned here are the C names.
func CgoStructs() map[string]Struct {
	types := map[string]reflect.Type{
		"CK_ATTRIBUTE":                     reflect.TypeOf(C.CK_ATTRIBUTE{}),
		"CK_KEY_DERIVATION_STRING_DATA":    reflect.TypeOf(C.CK_KEY_DERIVATION_STRING_DATA{}),
		"CK_AES_CBC_ENCRYPT_DATA_PARAMS":   reflect.TypeOf(C.CK_AES_CBC_ENCRYPT_DATA_PARAMS{}),
		"CK_DES_CBC_ENCRYPT_DATA_PARAMS":   reflect.TypeOf(C.CK_DES_CBC_ENCRYPT_DATA_PARAMS{}),
		"CK_MAC_GENERAL_PARAMS":            reflect.TypeOf(C.CK_MAC_GENERAL_PARAMS(0)),
		"CK_AES_CTR_PARAMS":                reflect.TypeOf(C.CK_AES_CTR_PARAMS{}),
		"CK_PRF_DATA_PARAM":                reflect.TypeOf(C.CK_PRF_DATA_PARAM{}),
		"CK_SP800_108_COUNTER_FORMAT":      reflect.TypeOf(C.CK_SP800_108_COUNTER_FORMAT{}),
		"CK_SP800_108_DKM_LENGTH_FORMAT":   reflect.TypeOf(C.CK_SP800_108_DKM_LENGTH_FORMAT{}),
		"CK_DERIVED_KEY":                   reflect.TypeOf(C.CK_DERIVED_KEY{}),
		"CK_SP800_108_KDF_PARAMS":          reflect.TypeOf(C.CK_SP800_108_KDF_PARAMS{}),
		"CK_SP800_108_FEEDBACK_KDF_PARAMS": reflect.TypeOf(C.CK_SP800_108_FEEDBACK_KDF_PARAMS{}),
		"CK_HKDF_PARAMS":                   reflect.TypeOf(C.CK_HKDF_PARAMS{}),
	}
	out := make(map[string]Struct, len(types))
	for name, t := range types {
		s := Struct{Name: name, Size: t.Size(), Align: uintptr(t.Align())}
		if t.Kind() == reflect.Struct {
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if f.Name == "_" { // padding inserted by cgo
					continue
				}
				n := f.Name
				if n == "_type" {
					n = "type"
				}
				s.Fields = append(s.Fields, Field{Name: n, Offset: f.Offset, Size: f.Type.Size()})
			}
		}
		out[name] = s
	}
	return out
}

// Constants returns the values pkcs11t.h gives the constants that package
// mechanisms defines, keyed by C name.
func Constants() map[string]uint64 {
	return map[string]uint64{
		"CKK_HKDF":                                C.CKK_HKDF,
		"CKM_SP800_108_COUNTER_KDF":               C.CKM_SP800_108_COUNTER_KDF,
		"CKM_SP800_108_FEEDBACK_KDF":              C.CKM_SP800_108_FEEDBACK_KDF,
		"CKM_SP800_108_DOUBLE_PIPELINE_KDF":       C.CKM_SP800_108_DOUBLE_PIPELINE_KDF,
		"CKM_HKDF_DERIVE":                         C.CKM_HKDF_DERIVE,
		"CKM_HKDF_DATA":                           C.CKM_HKDF_DATA,
		"CKM_HKDF_KEY_GEN":                        C.CKM_HKDF_KEY_GEN,
		"CKF_HKDF_SALT_NULL":                      C.CKF_HKDF_SALT_NULL,
		"CKF_HKDF_SALT_DATA":                      C.CKF_HKDF_SALT_DATA,
		"CKF_HKDF_SALT_KEY":                       C.CKF_HKDF_SALT_KEY,
		"CK_SP800_108_ITERATION_VARIABLE":         C.CK_SP800_108_ITERATION_VARIABLE,
		"CK_SP800_108_OPTIONAL_COUNTER":           C.CK_SP800_108_OPTIONAL_COUNTER,
		"CK_SP800_108_COUNTER":                    C.CK_SP800_108_COUNTER,
		"CK_SP800_108_DKM_LENGTH":                 C.CK_SP800_108_DKM_LENGTH,
		"CK_SP800_108_BYTE_ARRAY":                 C.CK_SP800_108_BYTE_ARRAY,
		"CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS":     C.CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS,
		"CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS": C.CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS,
		// Mechanisms that miekg/pkcs11 already defines; listed so that the
		// mechanism-to-parameter table of package mechanisms can be checked.
		"CKM_AES_CTR":                   C.CKM_AES_CTR,
		"CKM_AES_CBC_ENCRYPT_DATA":      C.CKM_AES_CBC_ENCRYPT_DATA,
		"CKM_DES_CBC_ENCRYPT_DATA":      C.CKM_DES_CBC_ENCRYPT_DATA,
		"CKM_DES3_CBC_ENCRYPT_DATA":     C.CKM_DES3_CBC_ENCRYPT_DATA,
		"CKM_CONCATENATE_BASE_AND_DATA": C.CKM_CONCATENATE_BASE_AND_DATA,
	}
}

// Buf is a pointer/length pair read back from C memory.
type Buf struct {
	Ptr  uintptr // the pointer member; 0 is NULL_PTR
	Len  uint64  // the length member
	Data []byte  // Len bytes copied from Ptr; nil when Ptr is NULL_PTR
}

func buf(p unsafe.Pointer, n C.CK_ULONG) Buf {
	b := Buf{Ptr: uintptr(p), Len: uint64(n)}
	if p != nil {
		b.Data = C.GoBytes(p, C.int(n))
	}
	return b
}

func check(param []byte, want uintptr, name string) (unsafe.Pointer, error) {
	if uintptr(len(param)) != want {
		return nil, fmt.Errorf("cabi: %s parameter is %d bytes, sizeof(%s) is %d", name, len(param), name, want)
	}
	return unsafe.Pointer(&param[0]), nil
}

// KeyDerivationStringData is CK_KEY_DERIVATION_STRING_DATA read back.
type KeyDerivationStringData struct {
	Data Buf // pData, ulLen
}

// DecodeKeyDerivationStringData reads param as a CK_KEY_DERIVATION_STRING_DATA.
func DecodeKeyDerivationStringData(param []byte) (KeyDerivationStringData, error) {
	p, err := check(param, C.sizeof_CK_KEY_DERIVATION_STRING_DATA, "CK_KEY_DERIVATION_STRING_DATA")
	if err != nil {
		return KeyDerivationStringData{}, err
	}
	s := (*C.CK_KEY_DERIVATION_STRING_DATA)(p)
	return KeyDerivationStringData{Data: buf(unsafe.Pointer(s.pData), s.ulLen)}, nil
}

// CBCEncryptDataParams is CK_AES_CBC_ENCRYPT_DATA_PARAMS or
// CK_DES_CBC_ENCRYPT_DATA_PARAMS read back.
type CBCEncryptDataParams struct {
	IV   []byte
	Data Buf // pData, length
}

// DecodeAESCBCEncryptDataParams reads param as a CK_AES_CBC_ENCRYPT_DATA_PARAMS.
func DecodeAESCBCEncryptDataParams(param []byte) (CBCEncryptDataParams, error) {
	p, err := check(param, C.sizeof_CK_AES_CBC_ENCRYPT_DATA_PARAMS, "CK_AES_CBC_ENCRYPT_DATA_PARAMS")
	if err != nil {
		return CBCEncryptDataParams{}, err
	}
	s := (*C.CK_AES_CBC_ENCRYPT_DATA_PARAMS)(p)
	return CBCEncryptDataParams{
		IV:   C.GoBytes(unsafe.Pointer(&s.iv[0]), C.int(len(s.iv))),
		Data: buf(unsafe.Pointer(s.pData), s.length),
	}, nil
}

// DecodeDESCBCEncryptDataParams reads param as a CK_DES_CBC_ENCRYPT_DATA_PARAMS.
func DecodeDESCBCEncryptDataParams(param []byte) (CBCEncryptDataParams, error) {
	p, err := check(param, C.sizeof_CK_DES_CBC_ENCRYPT_DATA_PARAMS, "CK_DES_CBC_ENCRYPT_DATA_PARAMS")
	if err != nil {
		return CBCEncryptDataParams{}, err
	}
	s := (*C.CK_DES_CBC_ENCRYPT_DATA_PARAMS)(p)
	return CBCEncryptDataParams{
		IV:   C.GoBytes(unsafe.Pointer(&s.iv[0]), C.int(len(s.iv))),
		Data: buf(unsafe.Pointer(s.pData), s.length),
	}, nil
}

// DecodeMACGeneralParams reads param as a CK_MAC_GENERAL_PARAMS.
func DecodeMACGeneralParams(param []byte) (uint64, error) {
	p, err := check(param, C.sizeof_CK_MAC_GENERAL_PARAMS, "CK_MAC_GENERAL_PARAMS")
	if err != nil {
		return 0, err
	}
	return uint64(*(*C.CK_MAC_GENERAL_PARAMS)(p)), nil
}

// AESCTRParams is CK_AES_CTR_PARAMS read back.
type AESCTRParams struct {
	CounterBits uint64
	CB          []byte
}

// DecodeAESCTRParams reads param as a CK_AES_CTR_PARAMS.
func DecodeAESCTRParams(param []byte) (AESCTRParams, error) {
	p, err := check(param, C.sizeof_CK_AES_CTR_PARAMS, "CK_AES_CTR_PARAMS")
	if err != nil {
		return AESCTRParams{}, err
	}
	s := (*C.CK_AES_CTR_PARAMS)(p)
	return AESCTRParams{
		CounterBits: uint64(s.ulCounterBits),
		CB:          C.GoBytes(unsafe.Pointer(&s.cb[0]), C.int(len(s.cb))),
	}, nil
}

// HKDFParams is CK_HKDF_PARAMS read back.
type HKDFParams struct {
	Extract, Expand  uint8 // raw CK_BBOOL values
	PRFHashMechanism uint64
	SaltType         uint64
	Salt             Buf // pSalt, ulSaltLen
	SaltKey          uint64
	Info             Buf // pInfo, ulInfoLen
}

// DecodeHKDFParams reads param as a CK_HKDF_PARAMS.
func DecodeHKDFParams(param []byte) (HKDFParams, error) {
	p, err := check(param, C.sizeof_CK_HKDF_PARAMS, "CK_HKDF_PARAMS")
	if err != nil {
		return HKDFParams{}, err
	}
	s := (*C.CK_HKDF_PARAMS)(p)
	return HKDFParams{
		Extract:          uint8(s.bExtract),
		Expand:           uint8(s.bExpand),
		PRFHashMechanism: uint64(s.prfHashMechanism),
		SaltType:         uint64(s.ulSaltType),
		Salt:             buf(unsafe.Pointer(s.pSalt), s.ulSaltLen),
		SaltKey:          uint64(s.hSaltKey),
		Info:             buf(unsafe.Pointer(s.pInfo), s.ulInfoLen),
	}, nil
}

// CounterFormat is CK_SP800_108_COUNTER_FORMAT read back.
type CounterFormat struct {
	LittleEndian uint8
	WidthInBits  uint64
}

// DKMLengthFormat is CK_SP800_108_DKM_LENGTH_FORMAT read back.
type DKMLengthFormat struct {
	Method       uint64
	LittleEndian uint8
	WidthInBits  uint64
}

// PRFDataParam is CK_PRF_DATA_PARAM read back. When pValue is not NULL and
// ulValueLen equals the size of the structure its type calls for, the
// structure is decoded into Counter (CK_SP800_108_ITERATION_VARIABLE,
// CK_SP800_108_OPTIONAL_COUNTER) or DKMLength (CK_SP800_108_DKM_LENGTH).
type PRFDataParam struct {
	Type      uint64
	Value     Buf // pValue, ulValueLen
	Counter   *CounterFormat
	DKMLength *DKMLengthFormat
}

// Attribute is CK_ATTRIBUTE read back.
type Attribute struct {
	Type  uint64
	Value Buf // pValue, ulValueLen
}

// DerivedKey is CK_DERIVED_KEY read back.
type DerivedKey struct {
	TemplatePtr    uintptr // pTemplate
	AttributeCount uint64  // ulAttributeCount
	Template       []Attribute
	// PHKey is phKey, the location that receives the handle of the
	// derived key. Use LoadULong and StoreULong to access it.
	PHKey unsafe.Pointer
}

// KDFParams is CK_SP800_108_KDF_PARAMS or CK_SP800_108_FEEDBACK_KDF_PARAMS
// read back (IV is only set for the latter).
type KDFParams struct {
	PRFType                 uint64
	NumberOfDataParams      uint64  // ulNumberOfDataParams
	DataParamsPtr           uintptr // pDataParams
	DataParams              []PRFDataParam
	IV                      Buf     // pIV, ulIVLen (feedback only)
	AdditionalDerivedKeys   uint64  // ulAdditionalDerivedKeys
	AdditionalDerivedKeyPtr uintptr // pAdditionalDerivedKeys
	DerivedKeys             []DerivedKey
}

func decodeDataParams(p C.CK_PRF_DATA_PARAM_PTR, n C.CK_ULONG) []PRFDataParam {
	if p == nil {
		return nil
	}
	out := make([]PRFDataParam, 0, int(n))
	for _, d := range unsafe.Slice(p, int(n)) {
		e := PRFDataParam{Type: uint64(d._type), Value: buf(unsafe.Pointer(d.pValue), d.ulValueLen)}
		if d.pValue != nil {
			switch d._type {
			case C.CK_SP800_108_ITERATION_VARIABLE, C.CK_SP800_108_OPTIONAL_COUNTER:
				if d.ulValueLen == C.sizeof_CK_SP800_108_COUNTER_FORMAT {
					f := (*C.CK_SP800_108_COUNTER_FORMAT)(unsafe.Pointer(d.pValue))
					e.Counter = &CounterFormat{LittleEndian: uint8(f.bLittleEndian), WidthInBits: uint64(f.ulWidthInBits)}
				}
			case C.CK_SP800_108_DKM_LENGTH:
				if d.ulValueLen == C.sizeof_CK_SP800_108_DKM_LENGTH_FORMAT {
					f := (*C.CK_SP800_108_DKM_LENGTH_FORMAT)(unsafe.Pointer(d.pValue))
					e.DKMLength = &DKMLengthFormat{
						Method:       uint64(f.dkmLengthMethod),
						LittleEndian: uint8(f.bLittleEndian),
						WidthInBits:  uint64(f.ulWidthInBits),
					}
				}
			}
		}
		out = append(out, e)
	}
	return out
}

func decodeDerivedKeys(p C.CK_DERIVED_KEY_PTR, n C.CK_ULONG) []DerivedKey {
	if p == nil {
		return nil
	}
	out := make([]DerivedKey, 0, int(n))
	for _, k := range unsafe.Slice(p, int(n)) {
		dk := DerivedKey{
			TemplatePtr:    uintptr(unsafe.Pointer(k.pTemplate)),
			AttributeCount: uint64(k.ulAttributeCount),
			PHKey:          unsafe.Pointer(k.phKey),
		}
		if k.pTemplate != nil {
			for _, a := range unsafe.Slice(k.pTemplate, int(k.ulAttributeCount)) {
				dk.Template = append(dk.Template, Attribute{Type: uint64(a._type), Value: buf(unsafe.Pointer(a.pValue), a.ulValueLen)})
			}
		}
		out = append(out, dk)
	}
	return out
}

// DecodeSP800108KDFParams reads param as a CK_SP800_108_KDF_PARAMS.
func DecodeSP800108KDFParams(param []byte) (KDFParams, error) {
	p, err := check(param, C.sizeof_CK_SP800_108_KDF_PARAMS, "CK_SP800_108_KDF_PARAMS")
	if err != nil {
		return KDFParams{}, err
	}
	s := (*C.CK_SP800_108_KDF_PARAMS)(p)
	return KDFParams{
		PRFType:                 uint64(s.prfType),
		NumberOfDataParams:      uint64(s.ulNumberOfDataParams),
		DataParamsPtr:           uintptr(unsafe.Pointer(s.pDataParams)),
		DataParams:              decodeDataParams(s.pDataParams, s.ulNumberOfDataParams),
		AdditionalDerivedKeys:   uint64(s.ulAdditionalDerivedKeys),
		AdditionalDerivedKeyPtr: uintptr(unsafe.Pointer(s.pAdditionalDerivedKeys)),
		DerivedKeys:             decodeDerivedKeys(s.pAdditionalDerivedKeys, s.ulAdditionalDerivedKeys),
	}, nil
}

// DecodeSP800108FeedbackKDFParams reads param as a
// CK_SP800_108_FEEDBACK_KDF_PARAMS.
func DecodeSP800108FeedbackKDFParams(param []byte) (KDFParams, error) {
	p, err := check(param, C.sizeof_CK_SP800_108_FEEDBACK_KDF_PARAMS, "CK_SP800_108_FEEDBACK_KDF_PARAMS")
	if err != nil {
		return KDFParams{}, err
	}
	s := (*C.CK_SP800_108_FEEDBACK_KDF_PARAMS)(p)
	return KDFParams{
		PRFType:                 uint64(s.prfType),
		NumberOfDataParams:      uint64(s.ulNumberOfDataParams),
		DataParamsPtr:           uintptr(unsafe.Pointer(s.pDataParams)),
		DataParams:              decodeDataParams(s.pDataParams, s.ulNumberOfDataParams),
		IV:                      buf(unsafe.Pointer(s.pIV), s.ulIVLen),
		AdditionalDerivedKeys:   uint64(s.ulAdditionalDerivedKeys),
		AdditionalDerivedKeyPtr: uintptr(unsafe.Pointer(s.pAdditionalDerivedKeys)),
		DerivedKeys:             decodeDerivedKeys(s.pAdditionalDerivedKeys, s.ulAdditionalDerivedKeys),
	}, nil
}

// StoreULong writes v as a CK_ULONG (e.g. a CK_OBJECT_HANDLE) at p, the way
// a token writes *phKey.
func StoreULong(p unsafe.Pointer, v uint64) {
	*(*C.CK_ULONG)(p) = C.CK_ULONG(v)
}

// LoadULong reads the CK_ULONG at p.
func LoadULong(p unsafe.Pointer) uint64 {
	return uint64(*(*C.CK_ULONG)(p))
}
