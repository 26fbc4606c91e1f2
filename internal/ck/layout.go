package ck

// The C layout of ck.h as this package's C compiler sees it, for ck_test.go
// to compare with <pkcs11.h> (through internal/cabi): cgo cannot be used in
// test files.

/*
#include <stddef.h>
#include "ck.h"

typedef struct {
	const char *strct;
	const char *name;
	size_t offset;
	size_t size;
} ck_field;

#define CK_F(T, f) { #T, #f, offsetof(T, f), sizeof(((T *)0)->f) }
#define CK_FL(f) CK_F(ck_function_list, f)

static const ck_field ck_fields[] = {
	CK_F(ck_attribute, type),
	CK_F(ck_attribute, pValue),
	CK_F(ck_attribute, ulValueLen),
	CK_F(ck_mechanism, mechanism),
	CK_F(ck_mechanism, pParameter),
	CK_F(ck_mechanism, ulParameterLen),
	CK_F(ck_version, major),
	CK_F(ck_version, minor),
	CK_F(ck_info, cryptokiVersion),
	CK_F(ck_info, manufacturerID),
	CK_F(ck_info, flags),
	CK_F(ck_info, libraryDescription),
	CK_F(ck_info, libraryVersion),
	CK_F(ck_slot_info, slotDescription),
	CK_F(ck_slot_info, manufacturerID),
	CK_F(ck_slot_info, flags),
	CK_F(ck_slot_info, hardwareVersion),
	CK_F(ck_slot_info, firmwareVersion),
	CK_F(ck_token_info, label),
	CK_F(ck_token_info, manufacturerID),
	CK_F(ck_token_info, model),
	CK_F(ck_token_info, serialNumber),
	CK_F(ck_token_info, flags),
	CK_F(ck_token_info, ulMaxSessionCount),
	CK_F(ck_token_info, ulSessionCount),
	CK_F(ck_token_info, ulMaxRwSessionCount),
	CK_F(ck_token_info, ulRwSessionCount),
	CK_F(ck_token_info, ulMaxPinLen),
	CK_F(ck_token_info, ulMinPinLen),
	CK_F(ck_token_info, ulTotalPublicMemory),
	CK_F(ck_token_info, ulFreePublicMemory),
	CK_F(ck_token_info, ulTotalPrivateMemory),
	CK_F(ck_token_info, ulFreePrivateMemory),
	CK_F(ck_token_info, hardwareVersion),
	CK_F(ck_token_info, firmwareVersion),
	CK_F(ck_token_info, utcTime),
	CK_F(ck_session_info, slotID),
	CK_F(ck_session_info, state),
	CK_F(ck_session_info, flags),
	CK_F(ck_session_info, ulDeviceError),
	CK_F(ck_mechanism_info, ulMinKeySize),
	CK_F(ck_mechanism_info, ulMaxKeySize),
	CK_F(ck_mechanism_info, flags),
	CK_F(ck_c_initialize_args, CreateMutex),
	CK_F(ck_c_initialize_args, DestroyMutex),
	CK_F(ck_c_initialize_args, LockMutex),
	CK_F(ck_c_initialize_args, UnlockMutex),
	CK_F(ck_c_initialize_args, flags),
	CK_F(ck_c_initialize_args, pReserved),

	CK_FL(version),
	CK_FL(C_Initialize),
	CK_FL(C_Finalize),
	CK_FL(C_GetInfo),
	CK_FL(C_GetFunctionList),
	CK_FL(C_GetSlotList),
	CK_FL(C_GetSlotInfo),
	CK_FL(C_GetTokenInfo),
	CK_FL(C_GetMechanismList),
	CK_FL(C_GetMechanismInfo),
	CK_FL(C_InitToken),
	CK_FL(C_InitPIN),
	CK_FL(C_SetPIN),
	CK_FL(C_OpenSession),
	CK_FL(C_CloseSession),
	CK_FL(C_CloseAllSessions),
	CK_FL(C_GetSessionInfo),
	CK_FL(C_GetOperationState),
	CK_FL(C_SetOperationState),
	CK_FL(C_Login),
	CK_FL(C_Logout),
	CK_FL(C_CreateObject),
	CK_FL(C_CopyObject),
	CK_FL(C_DestroyObject),
	CK_FL(C_GetObjectSize),
	CK_FL(C_GetAttributeValue),
	CK_FL(C_SetAttributeValue),
	CK_FL(C_FindObjectsInit),
	CK_FL(C_FindObjects),
	CK_FL(C_FindObjectsFinal),
	CK_FL(C_EncryptInit),
	CK_FL(C_Encrypt),
	CK_FL(C_EncryptUpdate),
	CK_FL(C_EncryptFinal),
	CK_FL(C_DecryptInit),
	CK_FL(C_Decrypt),
	CK_FL(C_DecryptUpdate),
	CK_FL(C_DecryptFinal),
	CK_FL(C_DigestInit),
	CK_FL(C_Digest),
	CK_FL(C_DigestUpdate),
	CK_FL(C_DigestKey),
	CK_FL(C_DigestFinal),
	CK_FL(C_SignInit),
	CK_FL(C_Sign),
	CK_FL(C_SignUpdate),
	CK_FL(C_SignFinal),
	CK_FL(C_SignRecoverInit),
	CK_FL(C_SignRecover),
	CK_FL(C_VerifyInit),
	CK_FL(C_Verify),
	CK_FL(C_VerifyUpdate),
	CK_FL(C_VerifyFinal),
	CK_FL(C_VerifyRecoverInit),
	CK_FL(C_VerifyRecover),
	CK_FL(C_DigestEncryptUpdate),
	CK_FL(C_DecryptDigestUpdate),
	CK_FL(C_SignEncryptUpdate),
	CK_FL(C_DecryptVerifyUpdate),
	CK_FL(C_GenerateKey),
	CK_FL(C_GenerateKeyPair),
	CK_FL(C_WrapKey),
	CK_FL(C_UnwrapKey),
	CK_FL(C_DeriveKey),
	CK_FL(C_SeedRandom),
	CK_FL(C_GenerateRandom),
	CK_FL(C_GetFunctionStatus),
	CK_FL(C_CancelFunction),
	CK_FL(C_WaitForSlotEvent),
};

typedef struct {
	const char *name;
	size_t size;
	size_t align;
} ck_struct;

static const ck_struct ck_structs[] = {
	{ "ck_attribute", sizeof(ck_attribute), __alignof__(ck_attribute) },
	{ "ck_mechanism", sizeof(ck_mechanism), __alignof__(ck_mechanism) },
	{ "ck_version", sizeof(ck_version), __alignof__(ck_version) },
	{ "ck_function_list", sizeof(ck_function_list), __alignof__(ck_function_list) },
	{ "ck_info", sizeof(ck_info), __alignof__(ck_info) },
	{ "ck_slot_info", sizeof(ck_slot_info), __alignof__(ck_slot_info) },
	{ "ck_token_info", sizeof(ck_token_info), __alignof__(ck_token_info) },
	{ "ck_session_info", sizeof(ck_session_info), __alignof__(ck_session_info) },
	{ "ck_mechanism_info", sizeof(ck_mechanism_info), __alignof__(ck_mechanism_info) },
	{ "ck_c_initialize_args", sizeof(ck_c_initialize_args), __alignof__(ck_c_initialize_args) },
};

static size_t ck_nfields(void) { return sizeof ck_fields / sizeof ck_fields[0]; }
static ck_field ck_field_at(size_t i) { return ck_fields[i]; }
static size_t ck_nstructs(void) { return sizeof ck_structs / sizeof ck_structs[0]; }
static ck_struct ck_struct_at(size_t i) { return ck_structs[i]; }
static unsigned long ck_unavailable(void) { return CK_UNAVAILABLE; }
*/
import "C"

// cField is one member of a C structure declared in ck.h.
type cField struct {
	Name         string
	Offset, Size uintptr
}

// cStruct is the layout of a structure declared in ck.h.
type cStruct struct {
	Size, Align uintptr
	Fields      []cField // the members listed in the offsetof table, in its order
}

// cLayout returns the layout of ck.h's structures (ck_attribute,
// ck_mechanism, ck_version, ck_function_list) as computed by the C compiler.
func cLayout() map[string]cStruct {
	out := map[string]cStruct{}
	for i := C.size_t(0); i < C.ck_nstructs(); i++ {
		s := C.ck_struct_at(i)
		out[C.GoString(s.name)] = cStruct{Size: uintptr(s.size), Align: uintptr(s.align)}
	}
	for i := C.size_t(0); i < C.ck_nfields(); i++ {
		f := C.ck_field_at(i)
		name := C.GoString(f.strct)
		s, ok := out[name]
		if !ok {
			panic("ck: layout table names unknown struct " + name)
		}
		s.Fields = append(s.Fields, cField{Name: C.GoString(f.name), Offset: uintptr(f.offset), Size: uintptr(f.size)})
		out[name] = s
	}
	return out
}

// cConstants returns the values ck.h and ck.go give PKCS#11 constants, keyed
// by their <pkcs11.h> names.
func cConstants() map[string]uint64 {
	return map[string]uint64{
		"CK_UNAVAILABLE_INFORMATION": uint64(C.ck_unavailable()),
		"CKR_ARGUMENTS_BAD":          uint64(C.CK_ARGUMENTS_BAD),
		"CKR_FUNCTION_NOT_SUPPORTED": uint64(C.CK_FUNCTION_NOT_SUPPORTED),
	}
}
