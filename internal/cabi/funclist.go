package cabi

// The C view of what package internal/ck declares for itself (it cannot
// include the NSS headers): CK_FUNCTION_LIST, CK_MECHANISM, CK_VERSION and
// the constants it uses. Kept apart from Structs and Constants, which are
// the tables of the mechanism parameter structures that package mechanisms
// must mirror one for one.

/*
#cgo CFLAGS: -I/usr/include/nss -I/usr/include/nspr
#include <stddef.h>
#include <pkcs11.h>

typedef struct {
	const char *strct;
	const char *name;
	size_t offset;
	size_t size;
} cabi_fl_field;

#define CABI_FL_F(T, f) { #T, #f, offsetof(T, f), sizeof(((T *)0)->f) }

// The members of CK_FUNCTION_LIST, generated from pkcs11f.h itself the way
// pkcs11.h generates the structure (2.x functions only, in header order),
// so that no function can be left out or misplaced by hand.
static const cabi_fl_field cabi_fl_fields[] = {
	CABI_FL_F(CK_FUNCTION_LIST, version),
#define CK_PKCS11_2_0_ONLY 1
#define CK_PKCS11_FUNCTION_INFO(name) CABI_FL_F(CK_FUNCTION_LIST, name),
#include <pkcs11f.h>
#undef CK_PKCS11_FUNCTION_INFO
#undef CK_PKCS11_2_0_ONLY

	CABI_FL_F(CK_MECHANISM, mechanism),
	CABI_FL_F(CK_MECHANISM, pParameter),
	CABI_FL_F(CK_MECHANISM, ulParameterLen),

	CABI_FL_F(CK_VERSION, major),
	CABI_FL_F(CK_VERSION, minor),

	CABI_FL_F(CK_INFO, cryptokiVersion),
	CABI_FL_F(CK_INFO, manufacturerID),
	CABI_FL_F(CK_INFO, flags),
	CABI_FL_F(CK_INFO, libraryDescription),
	CABI_FL_F(CK_INFO, libraryVersion),

	CABI_FL_F(CK_SLOT_INFO, slotDescription),
	CABI_FL_F(CK_SLOT_INFO, manufacturerID),
	CABI_FL_F(CK_SLOT_INFO, flags),
	CABI_FL_F(CK_SLOT_INFO, hardwareVersion),
	CABI_FL_F(CK_SLOT_INFO, firmwareVersion),

	CABI_FL_F(CK_TOKEN_INFO, label),
	CABI_FL_F(CK_TOKEN_INFO, manufacturerID),
	CABI_FL_F(CK_TOKEN_INFO, model),
	CABI_FL_F(CK_TOKEN_INFO, serialNumber),
	CABI_FL_F(CK_TOKEN_INFO, flags),
	CABI_FL_F(CK_TOKEN_INFO, ulMaxSessionCount),
	CABI_FL_F(CK_TOKEN_INFO, ulSessionCount),
	CABI_FL_F(CK_TOKEN_INFO, ulMaxRwSessionCount),
	CABI_FL_F(CK_TOKEN_INFO, ulRwSessionCount),
	CABI_FL_F(CK_TOKEN_INFO, ulMaxPinLen),
	CABI_FL_F(CK_TOKEN_INFO, ulMinPinLen),
	CABI_FL_F(CK_TOKEN_INFO, ulTotalPublicMemory),
	CABI_FL_F(CK_TOKEN_INFO, ulFreePublicMemory),
	CABI_FL_F(CK_TOKEN_INFO, ulTotalPrivateMemory),
	CABI_FL_F(CK_TOKEN_INFO, ulFreePrivateMemory),
	CABI_FL_F(CK_TOKEN_INFO, hardwareVersion),
	CABI_FL_F(CK_TOKEN_INFO, firmwareVersion),
	CABI_FL_F(CK_TOKEN_INFO, utcTime),

	CABI_FL_F(CK_SESSION_INFO, slotID),
	CABI_FL_F(CK_SESSION_INFO, state),
	CABI_FL_F(CK_SESSION_INFO, flags),
	CABI_FL_F(CK_SESSION_INFO, ulDeviceError),

	CABI_FL_F(CK_MECHANISM_INFO, ulMinKeySize),
	CABI_FL_F(CK_MECHANISM_INFO, ulMaxKeySize),
	CABI_FL_F(CK_MECHANISM_INFO, flags),

	CABI_FL_F(CK_C_INITIALIZE_ARGS, CreateMutex),
	CABI_FL_F(CK_C_INITIALIZE_ARGS, DestroyMutex),
	CABI_FL_F(CK_C_INITIALIZE_ARGS, LockMutex),
	CABI_FL_F(CK_C_INITIALIZE_ARGS, UnlockMutex),
	CABI_FL_F(CK_C_INITIALIZE_ARGS, flags),
	CABI_FL_F(CK_C_INITIALIZE_ARGS, LibraryParameters),
	CABI_FL_F(CK_C_INITIALIZE_ARGS, pReserved),
};

typedef struct {
	const char *name;
	size_t size;
	size_t align;
} cabi_fl_struct;

static const cabi_fl_struct cabi_fl_structs[] = {
	{ "CK_FUNCTION_LIST", sizeof(CK_FUNCTION_LIST), __alignof__(CK_FUNCTION_LIST) },
	{ "CK_MECHANISM", sizeof(CK_MECHANISM), __alignof__(CK_MECHANISM) },
	{ "CK_VERSION", sizeof(CK_VERSION), __alignof__(CK_VERSION) },
	{ "CK_INFO", sizeof(CK_INFO), __alignof__(CK_INFO) },
	{ "CK_SLOT_INFO", sizeof(CK_SLOT_INFO), __alignof__(CK_SLOT_INFO) },
	{ "CK_TOKEN_INFO", sizeof(CK_TOKEN_INFO), __alignof__(CK_TOKEN_INFO) },
	{ "CK_SESSION_INFO", sizeof(CK_SESSION_INFO), __alignof__(CK_SESSION_INFO) },
	{ "CK_MECHANISM_INFO", sizeof(CK_MECHANISM_INFO), __alignof__(CK_MECHANISM_INFO) },
	{ "CK_C_INITIALIZE_ARGS", sizeof(CK_C_INITIALIZE_ARGS), __alignof__(CK_C_INITIALIZE_ARGS) },
};

static size_t cabi_fl_nfields(void) { return sizeof cabi_fl_fields / sizeof cabi_fl_fields[0]; }
static cabi_fl_field cabi_fl_field_at(size_t i) { return cabi_fl_fields[i]; }
static size_t cabi_fl_nstructs(void) { return sizeof cabi_fl_structs / sizeof cabi_fl_structs[0]; }
static cabi_fl_struct cabi_fl_struct_at(size_t i) { return cabi_fl_structs[i]; }
*/
import "C"

import "reflect"

// CallStructs returns, as computed by the C compiler (sizeof, __alignof__,
// offsetof), the layout of the types a direct PKCS#11 caller declares:
// CK_FUNCTION_LIST (its CK_VERSION, then every function pointer of
// pkcs11f.h in order, PKCS#11 2.x functions only: the structure
// C_GetFunctionList returns), CK_MECHANISM and CK_VERSION. CK_ATTRIBUTE is
// in Structs.
func CallStructs() map[string]Struct {
	out := make(map[string]Struct)
	for i := C.size_t(0); i < C.cabi_fl_nstructs(); i++ {
		s := C.cabi_fl_struct_at(i)
		name := C.GoString(s.name)
		out[name] = Struct{Name: name, Size: uintptr(s.size), Align: uintptr(s.align)}
	}
	for i := C.size_t(0); i < C.cabi_fl_nfields(); i++ {
		f := C.cabi_fl_field_at(i)
		name := C.GoString(f.strct)
		s, ok := out[name]
		if !ok {
			panic("cabi: function list table names unknown struct " + name)
		}
		s.Fields = append(s.Fields, Field{Name: C.GoString(f.name), Offset: uintptr(f.offset), Size: uintptr(f.size)})
		out[name] = s
	}
	return out
}

// CgoCallStructs returns the same types as cgo translated them, every
// member included, so that comparing with CallStructs proves that the
// offsetof table is complete.
func CgoCallStructs() map[string]Struct {
	types := map[string]reflect.Type{
		"CK_FUNCTION_LIST":     reflect.TypeOf(C.CK_FUNCTION_LIST{}),
		"CK_MECHANISM":         reflect.TypeOf(C.CK_MECHANISM{}),
		"CK_VERSION":           reflect.TypeOf(C.CK_VERSION{}),
		"CK_INFO":              reflect.TypeOf(C.CK_INFO{}),
		"CK_SLOT_INFO":         reflect.TypeOf(C.CK_SLOT_INFO{}),
		"CK_TOKEN_INFO":        reflect.TypeOf(C.CK_TOKEN_INFO{}),
		"CK_SESSION_INFO":      reflect.TypeOf(C.CK_SESSION_INFO{}),
		"CK_MECHANISM_INFO":    reflect.TypeOf(C.CK_MECHANISM_INFO{}),
		"CK_C_INITIALIZE_ARGS": reflect.TypeOf(C.CK_C_INITIALIZE_ARGS{}),
	}
	out := make(map[string]Struct, len(types))
	for name, t := range types {
		s := Struct{Name: name, Size: t.Size(), Align: uintptr(t.Align())}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Name == "_" {
				continue
			}
			s.Fields = append(s.Fields, Field{Name: f.Name, Offset: f.Offset, Size: f.Type.Size()})
		}
		out[name] = s
	}
	return out
}

// CallConstants returns the values pkcs11t.h gives the constants a direct
// PKCS#11 caller uses, keyed by C name. CKR_OK (0) is left out.
func CallConstants() map[string]uint64 {
	return map[string]uint64{
		"CK_UNAVAILABLE_INFORMATION": C.CK_UNAVAILABLE_INFORMATION,
		"CKR_ARGUMENTS_BAD":          C.CKR_ARGUMENTS_BAD,
		"CKR_FUNCTION_NOT_SUPPORTED": C.CKR_FUNCTION_NOT_SUPPORTED,
		"CKR_ATTRIBUTE_SENSITIVE":    C.CKR_ATTRIBUTE_SENSITIVE,
		"CKR_ATTRIBUTE_TYPE_INVALID": C.CKR_ATTRIBUTE_TYPE_INVALID,
		"CKR_BUFFER_TOO_SMALL":       C.CKR_BUFFER_TOO_SMALL,
	}
}
