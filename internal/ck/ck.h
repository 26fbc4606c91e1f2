/* The few PKCS#11 v2.40 types package ck needs, declared here so that it
 * builds without the NSS or p11-kit development headers. Unix layout only
 * (natural alignment, CK_ULONG = unsigned long): Windows packs the PKCS#11
 * structures to 1 byte and is refused at build time (abi_windows.go).
 * Every offset and size is checked against <pkcs11.h> by ck_test.go through
 * package internal/cabi. */
#ifndef P11DERIVE_CK_H
#define P11DERIVE_CK_H

#include <stddef.h>

typedef unsigned long ck_ulong; /* CK_ULONG, CK_RV, handles, types */
typedef ck_ulong ck_rv;

#define CK_OK 0UL
#define CK_ARGUMENTS_BAD 0x7UL
#define CK_FUNCTION_NOT_SUPPORTED 0x54UL
#define CK_UNAVAILABLE (~0UL) /* CK_UNAVAILABLE_INFORMATION */

typedef struct {
	unsigned char major, minor;
} ck_version; /* CK_VERSION */

typedef struct {
	ck_ulong type;
	void *pValue;
	ck_ulong ulValueLen;
} ck_attribute; /* CK_ATTRIBUTE */

typedef struct {
	ck_ulong mechanism;
	void *pParameter;
	ck_ulong ulParameterLen;
} ck_mechanism; /* CK_MECHANISM */

/* A function this package never calls: only its place matters. */
typedef void (*ck_unused)(void);

/* CK_FUNCTION_LIST: CK_VERSION, then the 68 functions of PKCS#11 v2.40 in
 * pkcs11f.h order. Only the functions package ck calls have prototypes. */
typedef struct {
	ck_version version;
	ck_unused C_Initialize;
	ck_unused C_Finalize;
	ck_unused C_GetInfo;
	ck_unused C_GetFunctionList;
	ck_unused C_GetSlotList;
	ck_unused C_GetSlotInfo;
	ck_unused C_GetTokenInfo;
	ck_unused C_GetMechanismList;
	ck_unused C_GetMechanismInfo;
	ck_unused C_InitToken;
	ck_unused C_InitPIN;
	ck_unused C_SetPIN;
	ck_unused C_OpenSession;
	ck_unused C_CloseSession;
	ck_unused C_CloseAllSessions;
	ck_unused C_GetSessionInfo;
	ck_unused C_GetOperationState;
	ck_unused C_SetOperationState;
	ck_unused C_Login;
	ck_unused C_Logout;
	ck_unused C_CreateObject;
	ck_unused C_CopyObject;
	ck_rv (*C_DestroyObject)(ck_ulong hSession, ck_ulong hObject);
	ck_unused C_GetObjectSize;
	ck_rv (*C_GetAttributeValue)(ck_ulong hSession, ck_ulong hObject, ck_attribute *pTemplate, ck_ulong ulCount);
	ck_unused C_SetAttributeValue;
	ck_unused C_FindObjectsInit;
	ck_unused C_FindObjects;
	ck_unused C_FindObjectsFinal;
	ck_rv (*C_EncryptInit)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hKey);
	ck_rv (*C_Encrypt)(ck_ulong hSession, unsigned char *pData, ck_ulong ulDataLen, unsigned char *pEncryptedData, ck_ulong *pulEncryptedDataLen);
	ck_unused C_EncryptUpdate;
	ck_unused C_EncryptFinal;
	ck_unused C_DecryptInit;
	ck_unused C_Decrypt;
	ck_unused C_DecryptUpdate;
	ck_unused C_DecryptFinal;
	ck_unused C_DigestInit;
	ck_unused C_Digest;
	ck_unused C_DigestUpdate;
	ck_unused C_DigestKey;
	ck_unused C_DigestFinal;
	ck_rv (*C_SignInit)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hKey);
	ck_rv (*C_Sign)(ck_ulong hSession, unsigned char *pData, ck_ulong ulDataLen, unsigned char *pSignature, ck_ulong *pulSignatureLen);
	ck_unused C_SignUpdate;
	ck_unused C_SignFinal;
	ck_unused C_SignRecoverInit;
	ck_unused C_SignRecover;
	ck_unused C_VerifyInit;
	ck_unused C_Verify;
	ck_unused C_VerifyUpdate;
	ck_unused C_VerifyFinal;
	ck_unused C_VerifyRecoverInit;
	ck_unused C_VerifyRecover;
	ck_unused C_DigestEncryptUpdate;
	ck_unused C_DecryptDigestUpdate;
	ck_unused C_SignEncryptUpdate;
	ck_unused C_DecryptVerifyUpdate;
	ck_unused C_GenerateKey;
	ck_unused C_GenerateKeyPair;
	ck_unused C_WrapKey;
	ck_rv (*C_UnwrapKey)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hUnwrappingKey, unsigned char *pWrappedKey, ck_ulong ulWrappedKeyLen, ck_attribute *pTemplate, ck_ulong ulAttributeCount, ck_ulong *phKey);
	ck_rv (*C_DeriveKey)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hBaseKey, ck_attribute *pTemplate, ck_ulong ulAttributeCount, ck_ulong *phKey);
	ck_unused C_SeedRandom;
	ck_unused C_GenerateRandom;
	ck_unused C_GetFunctionStatus;
	ck_unused C_CancelFunction;
	ck_unused C_WaitForSlotEvent;
} ck_function_list;

#endif
