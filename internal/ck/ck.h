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
#define CK_BUFFER_TOO_SMALL 0x150UL
#define CK_CRYPTOKI_ALREADY_INITIALIZED 0x191UL
#define CK_OS_LOCKING_OK 0x2UL /* CKF_OS_LOCKING_OK */

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

typedef struct {
	ck_version cryptokiVersion;
	unsigned char manufacturerID[32];
	ck_ulong flags;
	unsigned char libraryDescription[32];
	ck_version libraryVersion;
} ck_info; /* CK_INFO */

typedef struct {
	unsigned char slotDescription[64];
	unsigned char manufacturerID[32];
	ck_ulong flags;
	ck_version hardwareVersion;
	ck_version firmwareVersion;
} ck_slot_info; /* CK_SLOT_INFO */

typedef struct {
	unsigned char label[32];
	unsigned char manufacturerID[32];
	unsigned char model[16];
	unsigned char serialNumber[16];
	ck_ulong flags;
	ck_ulong ulMaxSessionCount;
	ck_ulong ulSessionCount;
	ck_ulong ulMaxRwSessionCount;
	ck_ulong ulRwSessionCount;
	ck_ulong ulMaxPinLen;
	ck_ulong ulMinPinLen;
	ck_ulong ulTotalPublicMemory;
	ck_ulong ulFreePublicMemory;
	ck_ulong ulTotalPrivateMemory;
	ck_ulong ulFreePrivateMemory;
	ck_version hardwareVersion;
	ck_version firmwareVersion;
	unsigned char utcTime[16];
} ck_token_info; /* CK_TOKEN_INFO */

typedef struct {
	ck_ulong slotID;
	ck_ulong state;
	ck_ulong flags;
	ck_ulong ulDeviceError;
} ck_session_info; /* CK_SESSION_INFO */

typedef struct {
	ck_ulong ulMinKeySize;
	ck_ulong ulMaxKeySize;
	ck_ulong flags;
} ck_mechanism_info; /* CK_MECHANISM_INFO */

typedef struct {
	void *CreateMutex;
	void *DestroyMutex;
	void *LockMutex;
	void *UnlockMutex;
	ck_ulong flags;
	void *pReserved;
} ck_c_initialize_args; /* CK_C_INITIALIZE_ARGS */

/* ck_template builds the CK_ATTRIBUTE array of a serialised template w:
 * n (type, byte offset from w, length) triples, then the values. Empty
 * values get a NULL pValue, as github.com/miekg/pkcs11 passes them. */
static inline void ck_template(ck_attribute *a, const ck_ulong *w, ck_ulong n) {
	const unsigned char *base = (const unsigned char *)w;
	for (ck_ulong i = 0; i < n; i++) {
		a[i].type = w[3 * i];
		a[i].ulValueLen = w[3 * i + 2];
		a[i].pValue = a[i].ulValueLen ? (void *)(base + w[3 * i + 1]) : NULL;
	}
}

/* A function this package never calls: only its place matters. */
typedef void (*ck_unused)(void);

/* CK_FUNCTION_LIST: CK_VERSION, then the 68 functions of PKCS#11 v2.40 in
 * pkcs11f.h order. Only the functions package ck calls have prototypes. */
typedef struct {
	ck_version version;
	ck_rv (*C_Initialize)(void *pInitArgs);
	ck_rv (*C_Finalize)(void *pReserved);
	ck_rv (*C_GetInfo)(ck_info *pInfo);
	ck_unused C_GetFunctionList;
	ck_rv (*C_GetSlotList)(unsigned char tokenPresent, ck_ulong *pSlotList, ck_ulong *pulCount);
	ck_rv (*C_GetSlotInfo)(ck_ulong slotID, ck_slot_info *pInfo);
	ck_rv (*C_GetTokenInfo)(ck_ulong slotID, ck_token_info *pInfo);
	ck_rv (*C_GetMechanismList)(ck_ulong slotID, ck_ulong *pMechanismList, ck_ulong *pulCount);
	ck_rv (*C_GetMechanismInfo)(ck_ulong slotID, ck_ulong type, ck_mechanism_info *pInfo);
	ck_unused C_InitToken;
	ck_unused C_InitPIN;
	ck_unused C_SetPIN;
	ck_rv (*C_OpenSession)(ck_ulong slotID, ck_ulong flags, void *pApplication, void *Notify, ck_ulong *phSession);
	ck_rv (*C_CloseSession)(ck_ulong hSession);
	ck_unused C_CloseAllSessions;
	ck_rv (*C_GetSessionInfo)(ck_ulong hSession, ck_session_info *pInfo);
	ck_unused C_GetOperationState;
	ck_unused C_SetOperationState;
	ck_rv (*C_Login)(ck_ulong hSession, ck_ulong userType, unsigned char *pPin, ck_ulong ulPinLen);
	ck_rv (*C_Logout)(ck_ulong hSession);
	ck_rv (*C_CreateObject)(ck_ulong hSession, ck_attribute *pTemplate, ck_ulong ulCount, ck_ulong *phObject);
	ck_rv (*C_CopyObject)(ck_ulong hSession, ck_ulong hObject, ck_attribute *pTemplate, ck_ulong ulCount, ck_ulong *phNewObject);
	ck_rv (*C_DestroyObject)(ck_ulong hSession, ck_ulong hObject);
	ck_unused C_GetObjectSize;
	ck_rv (*C_GetAttributeValue)(ck_ulong hSession, ck_ulong hObject, ck_attribute *pTemplate, ck_ulong ulCount);
	ck_rv (*C_SetAttributeValue)(ck_ulong hSession, ck_ulong hObject, ck_attribute *pTemplate, ck_ulong ulCount);
	ck_rv (*C_FindObjectsInit)(ck_ulong hSession, ck_attribute *pTemplate, ck_ulong ulCount);
	ck_rv (*C_FindObjects)(ck_ulong hSession, ck_ulong *phObject, ck_ulong ulMaxObjectCount, ck_ulong *pulObjectCount);
	ck_rv (*C_FindObjectsFinal)(ck_ulong hSession);
	ck_rv (*C_EncryptInit)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hKey);
	ck_rv (*C_Encrypt)(ck_ulong hSession, unsigned char *pData, ck_ulong ulDataLen, unsigned char *pEncryptedData, ck_ulong *pulEncryptedDataLen);
	ck_unused C_EncryptUpdate;
	ck_unused C_EncryptFinal;
	ck_rv (*C_DecryptInit)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hKey);
	ck_rv (*C_Decrypt)(ck_ulong hSession, unsigned char *pEncryptedData, ck_ulong ulEncryptedDataLen, unsigned char *pData, ck_ulong *pulDataLen);
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
	ck_rv (*C_GenerateKey)(ck_ulong hSession, ck_mechanism *pMechanism, ck_attribute *pTemplate, ck_ulong ulCount, ck_ulong *phKey);
	ck_unused C_GenerateKeyPair;
	ck_rv (*C_WrapKey)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hWrappingKey, ck_ulong hKey, unsigned char *pWrappedKey, ck_ulong *pulWrappedKeyLen);
	ck_rv (*C_UnwrapKey)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hUnwrappingKey, unsigned char *pWrappedKey, ck_ulong ulWrappedKeyLen, ck_attribute *pTemplate, ck_ulong ulAttributeCount, ck_ulong *phKey);
	ck_rv (*C_DeriveKey)(ck_ulong hSession, ck_mechanism *pMechanism, ck_ulong hBaseKey, ck_attribute *pTemplate, ck_ulong ulAttributeCount, ck_ulong *phKey);
	ck_unused C_SeedRandom;
	ck_unused C_GenerateRandom;
	ck_unused C_GetFunctionStatus;
	ck_unused C_CancelFunction;
	ck_unused C_WaitForSlotEvent;
} ck_function_list;

#endif
