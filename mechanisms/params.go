package mechanisms

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Params is implemented by every mechanism parameter structure of this
// package, and only by them: KeyDerivationStringData,
// AESCBCEncryptDataParams, DESCBCEncryptDataParams, MACGeneralParams,
// AESCTRParams, SP800108KDFParams, SP800108FeedbackKDFParams and HKDFParams.
// Both a value and a pointer to it may be passed to Call.
//
// The struct tag p11 names the C members a Go field becomes: one name for a
// scalar member, "ptr:NAME,len:NAME" (in C member order) for a pointer and
// its length or count, "out:NAME" for a pointer the token writes through.
type Params interface {
	isParams()
}

func (KeyDerivationStringData) isParams()   {}
func (AESCBCEncryptDataParams) isParams()   {}
func (DESCBCEncryptDataParams) isParams()   {}
func (MACGeneralParams) isParams()          {}
func (AESCTRParams) isParams()              {}
func (SP800108KDFParams) isParams()         {}
func (SP800108FeedbackKDFParams) isParams() {}
func (HKDFParams) isParams()                {}

// validator is implemented by structures with constraints beyond their
// types. The marshaller calls validate on every such structure it reaches,
// before it allocates anything. mechanism is the mechanism the parameter is
// used with, so that mechanism-specific rules can be applied.
type validator interface {
	validate(mechanism uint) error
}

// KeyDerivationStringData mirrors CK_KEY_DERIVATION_STRING_DATA:
//
//	typedef struct CK_KEY_DERIVATION_STRING_DATA {
//		CK_BYTE_PTR pData;
//		CK_ULONG ulLen;
//	} CK_KEY_DERIVATION_STRING_DATA;
//
// "CK_KEY_DERIVATION_STRING_DATA provides the parameters for the
// CKM_CONCATENATE_BASE_AND_DATA, CKM_CONCATENATE_DATA_AND_BASE, and
// CKM_XOR_BASE_AND_DATA mechanisms." It is also the parameter of the
// CKM_xxx_ECB_ENCRYPT_DATA mechanisms.
type KeyDerivationStringData struct {
	// Data: pData "pointer to the byte string", ulLen "length of the byte
	// string".
	Data []byte `p11:"ptr:pData,len:ulLen"`
}

// AESCBCEncryptDataParams mirrors CK_AES_CBC_ENCRYPT_DATA_PARAMS:
//
//	typedef struct CK_AES_CBC_ENCRYPT_DATA_PARAMS {
//		CK_BYTE iv[16];
//		CK_BYTE_PTR pData;
//		CK_ULONG length;
//	} CK_AES_CBC_ENCRYPT_DATA_PARAMS;
//
// It "provides the parameters to the CKM_AES_CBC_ENCRYPT_DATA mechanism".
type AESCBCEncryptDataParams struct {
	// IV: iv, "16-octet initialization vector".
	IV [16]byte `p11:"iv"`
	// Data: pData "pointer to data to encrypt", length "length of data to
	// encrypt". CBC encryption without padding needs a non-empty multiple
	// of the 16-byte block size; Call rejects other lengths.
	Data []byte `p11:"ptr:pData,len:length"`
}

// DESCBCEncryptDataParams mirrors CK_DES_CBC_ENCRYPT_DATA_PARAMS:
//
//	typedef struct CK_DES_CBC_ENCRYPT_DATA_PARAMS {
//		CK_BYTE iv[8];
//		CK_BYTE_PTR pData;
//		CK_ULONG length;
//	} CK_DES_CBC_ENCRYPT_DATA_PARAMS;
//
// It "provides the parameters to the CKM_DES_CBC_ENCRYPT_DATA and
// CKM_DES3_CBC_ENCRYPT_DATA mechanisms".
type DESCBCEncryptDataParams struct {
	// IV: iv, "8-octet initialization vector".
	IV [8]byte `p11:"iv"`
	// Data: pData "pointer to data to encrypt", length "length of data to
	// encrypt". Must be a non-empty multiple of the 8-byte block size.
	Data []byte `p11:"ptr:pData,len:length"`
}

// MACGeneralParams mirrors CK_MAC_GENERAL_PARAMS:
//
//	typedef CK_ULONG CK_MAC_GENERAL_PARAMS;
//
// "CK_MAC_GENERAL_PARAMS provides the parameters to the general-length MACing
// mechanisms [...]. It holds the length of the MAC that these mechanisms
// produce." (CKM_AES_CMAC_GENERAL, CKM_SHA256_HMAC_GENERAL, ...)
type MACGeneralParams uint

// AESCTRParams mirrors CK_AES_CTR_PARAMS, the parameter of CKM_AES_CTR:
//
//	typedef struct CK_AES_CTR_PARAMS {
//		CK_ULONG ulCounterBits;
//		CK_BYTE cb[16];
//	} CK_AES_CTR_PARAMS;
//
// "It's up to the caller to initialize all of the bits in the counter block
// including the counter bits. The counter bits are the least significant bits
// of the counter block (cb). They are a big-endian value usually starting
// with 1."
type AESCTRParams struct {
	// CounterBits: ulCounterBits, "the number of bits in the counter block
	// (cb) that shall be incremented. This number shall be such that
	// 0 < ulCounterBits <= 128."
	CounterBits uint `p11:"ulCounterBits"`
	// CB: cb, "specifies the counter block".
	CB [16]byte `p11:"cb"`
}

// PRFDataParam is one CK_PRF_DATA_PARAM of an SP 800-108 KDF: "a segment of
// input for the PRF". It is implemented by IterationVariable,
// OptionalCounter, DKMLength and ByteArray (and pointers to them), which
// choose the type member; the marshaller fills in pValue and ulValueLen.
//
//	typedef struct CK_PRF_DATA_PARAM {
//		CK_PRF_DATA_TYPE type;
//		CK_VOID_PTR pValue;
//		CK_ULONG ulValueLen;
//	} CK_PRF_DATA_PARAM;
type PRFDataParam interface {
	prfData() (prfData, error)
}

// prfData is the C form of a PRFDataParam. Value is nil (pValue NULL_PTR,
// ulValueLen 0), a byte slice (ulValueLen its length) or a pointer to a
// structure (ulValueLen its C size).
type prfData struct {
	// type: "defines the type of data pointed to by pValue".
	Type uint `p11:"type"`
	// pValue "pointer to the data defined by type", ulValueLen "size of the
	// data pointed to by pValue".
	Value any `p11:"ptr:pValue,len:ulValueLen"`
}

// CounterFormat mirrors CK_SP800_108_COUNTER_FORMAT, which "is used to define
// the encoding format for a counter value":
//
//	typedef struct CK_SP800_108_COUNTER_FORMAT {
//		CK_BBOOL bLittleEndian;
//		CK_ULONG ulWidthInBits;
//	} CK_SP800_108_COUNTER_FORMAT;
type CounterFormat struct {
	// LittleEndian: bLittleEndian, "defines if the counter should be
	// represented in Big Endian or Little Endian format".
	LittleEndian bool `p11:"bLittleEndian"`
	// WidthInBits: ulWidthInBits, "defines the number of bits used to
	// represent the counter value".
	WidthInBits uint `p11:"ulWidthInBits"`
}

// IterationVariable is a CK_PRF_DATA_PARAM of type
// CK_SP800_108_ITERATION_VARIABLE: it "identifies the location of the
// iteration variable" in the PRF input. Exactly one is required.
//
// "For the Counter Mode KDF, pValue must be assigned a valid
// CK_SP800_108_COUNTER_FORMAT_PTR and ulValueLen must be set to
// sizeof(CK_SP800_108_COUNTER_FORMAT). For all other KDF types, pValue must
// be set to NULL_PTR and ulValueLen must be set to 0." So Format must be set
// for CKM_SP800_108_COUNTER_KDF and nil for the feedback and double-pipeline
// mechanisms.
type IterationVariable struct {
	Format *CounterFormat
}

func (v IterationVariable) prfData() (prfData, error) {
	if v.Format == nil {
		return prfData{Type: CK_SP800_108_ITERATION_VARIABLE}, nil
	}
	return prfData{Type: CK_SP800_108_ITERATION_VARIABLE, Value: v.Format}, nil
}

// OptionalCounter is a CK_PRF_DATA_PARAM of type CK_SP800_108_OPTIONAL_COUNTER
// (CK_SP800_108_COUNTER in the mechanisms specification): an optional counter
// in the PRF input of the feedback and double-pipeline KDFs. "pValue must be
// assigned a valid CK_SP800_108_COUNTER_FORMAT_PTR and ulValueLen must be set
// to sizeof(CK_SP800_108_COUNTER_FORMAT)." It is not allowed with
// CKM_SP800_108_COUNTER_KDF, where the iteration variable is the counter.
type OptionalCounter struct {
	Format CounterFormat
}

func (c OptionalCounter) prfData() (prfData, error) {
	f := c.Format
	return prfData{Type: CK_SP800_108_OPTIONAL_COUNTER, Value: &f}, nil
}

// DKMLength is a CK_PRF_DATA_PARAM of type CK_SP800_108_DKM_LENGTH, "the
// length in bits of the derived keying material (DKM)" encoded into the PRF
// input. Its value is a CK_SP800_108_DKM_LENGTH_FORMAT, which "is used to
// define the encoding format for the DKM value":
//
//	typedef struct CK_SP800_108_DKM_LENGTH_FORMAT {
//		CK_SP800_108_DKM_LENGTH_METHOD dkmLengthMethod;
//		CK_BBOOL bLittleEndian;
//		CK_ULONG ulWidthInBits;
//	} CK_SP800_108_DKM_LENGTH_FORMAT;
type DKMLength struct {
	// Method: dkmLengthMethod, "defines the method used to calculate the DKM
	// length value": CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS (the sum of the
	// lengths of all keys derived by the call) or
	// CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS (the sum of the lengths of all
	// PRF output segments).
	Method uint `p11:"dkmLengthMethod"`
	// LittleEndian: bLittleEndian, "defines if the DKM length value should
	// be represented in Big Endian or Little Endian format".
	LittleEndian bool `p11:"bLittleEndian"`
	// WidthInBits: ulWidthInBits, "defines the number of bits used to
	// represent the DKM length value".
	WidthInBits uint `p11:"ulWidthInBits"`
}

func (d DKMLength) prfData() (prfData, error) {
	return prfData{Type: CK_SP800_108_DKM_LENGTH, Value: &d}, nil
}

func (d DKMLength) validate(uint) error {
	if d.Method != CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS && d.Method != CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS {
		return fmt.Errorf("DKMLength.Method is %d, want CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS or CK_SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS", d.Method)
	}
	return nil
}

// ByteArray is a CK_PRF_DATA_PARAM of type CK_SP800_108_BYTE_ARRAY: "a
// generic byte array of data", used for the label, the context, separator
// bytes and the like. "pValue must be assigned a valid CK_BYTE_PTR value and
// ulValueLen must be set to a non-zero length", so it must not be empty.
type ByteArray []byte

func (b ByteArray) prfData() (prfData, error) {
	if len(b) == 0 {
		return prfData{}, errors.New("empty ByteArray (ulValueLen must be non-zero)")
	}
	return prfData{Type: CK_SP800_108_BYTE_ARRAY, Value: []byte(b)}, nil
}

// DerivedKey mirrors CK_DERIVED_KEY, an additional key derived by the same
// SP 800-108 call:
//
//	typedef struct CK_DERIVED_KEY {
//		CK_ATTRIBUTE_PTR pTemplate;
//		CK_ULONG ulAttributeCount;
//		CK_OBJECT_HANDLE_PTR phKey;
//	} CK_DERIVED_KEY;
type DerivedKey struct {
	// Template: pTemplate "pointer to a template for the new key",
	// ulAttributeCount "number of attributes in the template". The
	// CK_ATTRIBUTE array and every attribute value are copied to C memory.
	Template []*pkcs11.Attribute `p11:"ptr:pTemplate,len:ulAttributeCount"`
	// Handle is an output: phKey, "pointer to the location that receives
	// the handle of the derived key", points to C memory that the token
	// writes; Call copies the handle found there into Handle after fn
	// returns. It is CK_INVALID_HANDLE (0) if the token wrote nothing.
	Handle pkcs11.ObjectHandle `p11:"out:phKey"`
}

// SP800108KDFParams mirrors CK_SP800_108_KDF_PARAMS, which provides "the
// parameters for the CKM_SP800_108_COUNTER_KDF and
// CKM_SP800_108_DOUBLE_PIPELINE_KDF mechanisms":
//
//	typedef struct CK_SP800_108_KDF_PARAMS {
//		CK_SP800_108_PRF_TYPE prfType;
//		CK_ULONG ulNumberOfDataParams;
//		CK_PRF_DATA_PARAM_PTR pDataParams;
//		CK_ULONG ulAdditionalDerivedKeys;
//		CK_DERIVED_KEY_PTR pAdditionalDerivedKeys;
//	} CK_SP800_108_KDF_PARAMS;
type SP800108KDFParams struct {
	// PRFType: prfType, "type of PRF" — a MAC mechanism such as
	// CKM_SHA256_HMAC or CKM_AES_CMAC.
	PRFType uint `p11:"prfType"`
	// DataParams: pDataParams, "an array of CK_PRF_DATA_PARAM structures.
	// The array defines input parameters that are used to construct the
	// "data" input to the PRF", and ulNumberOfDataParams, the number of
	// its elements.
	DataParams []PRFDataParam `p11:"len:ulNumberOfDataParams,ptr:pDataParams"`
	// AdditionalDerivedKeys: pAdditionalDerivedKeys, "an array of
	// CK_DERIVED_KEY structures", and ulAdditionalDerivedKeys, the "number
	// of additional keys that will be derived". Empty gives NULL_PTR and 0.
	AdditionalDerivedKeys []DerivedKey `p11:"len:ulAdditionalDerivedKeys,ptr:pAdditionalDerivedKeys"`
}

func (p SP800108KDFParams) validate(mechanism uint) error {
	return checkDataParams(mechanism, p.DataParams)
}

// SP800108FeedbackKDFParams mirrors CK_SP800_108_FEEDBACK_KDF_PARAMS, which
// provides "the parameters for the CKM_SP800_108_FEEDBACK_KDF mechanism":
//
//	typedef struct CK_SP800_108_FEEDBACK_KDF_PARAMS {
//		CK_SP800_108_PRF_TYPE prfType;
//		CK_ULONG ulNumberOfDataParams;
//		CK_PRF_DATA_PARAM_PTR pDataParams;
//		CK_ULONG ulIVLen;
//		CK_BYTE_PTR pIV;
//		CK_ULONG ulAdditionalDerivedKeys;
//		CK_DERIVED_KEY_PTR pAdditionalDerivedKeys;
//	} CK_SP800_108_FEEDBACK_KDF_PARAMS;
//
// Note that here the IV length precedes its pointer.
type SP800108FeedbackKDFParams struct {
	// PRFType: prfType, "type of PRF".
	PRFType uint `p11:"prfType"`
	// DataParams: see SP800108KDFParams.DataParams.
	DataParams []PRFDataParam `p11:"len:ulNumberOfDataParams,ptr:pDataParams"`
	// IV: ulIVLen "the length in bytes of the IV", pIV "an array of bytes to
	// be used as the IV for the feedback mode KDF. This parameter is optional
	// and can be set to NULL_PTR"; empty gives NULL_PTR and 0.
	IV []byte `p11:"len:ulIVLen,ptr:pIV"`
	// AdditionalDerivedKeys: see SP800108KDFParams.AdditionalDerivedKeys.
	AdditionalDerivedKeys []DerivedKey `p11:"len:ulAdditionalDerivedKeys,ptr:pAdditionalDerivedKeys"`
}

func (p SP800108FeedbackKDFParams) validate(mechanism uint) error {
	return checkDataParams(mechanism, p.DataParams)
}

// checkDataParams applies the rules of the mechanisms specification for the
// CK_PRF_DATA_PARAM array: no nil entries, exactly one iteration variable,
// carrying a counter format in counter mode only, and no optional counter in
// counter mode. The mode rules are applied only for the three SP 800-108
// mechanisms; for other (vendor) mechanisms only the nil check is made.
func checkDataParams(mechanism uint, dps []PRFDataParam) error {
	sp800108 := mechanism == CKM_SP800_108_COUNTER_KDF ||
		mechanism == CKM_SP800_108_FEEDBACK_KDF ||
		mechanism == CKM_SP800_108_DOUBLE_PIPELINE_KDF
	counter := mechanism == CKM_SP800_108_COUNTER_KDF
	iterations := 0
	for i, d := range dps {
		var iv *IterationVariable
		optional := false
		switch d := d.(type) {
		case nil:
			return fmt.Errorf("DataParams[%d]: nil PRFDataParam", i)
		case IterationVariable:
			iv = &d
		case *IterationVariable:
			iv = d
		case OptionalCounter:
			optional = true
		case *OptionalCounter:
			optional = d != nil
		}
		if iv != nil {
			iterations++
			if sp800108 && counter && iv.Format == nil {
				return fmt.Errorf("DataParams[%d]: IterationVariable needs a Format (counter width) with CKM_SP800_108_COUNTER_KDF", i)
			}
			if sp800108 && !counter && iv.Format != nil {
				return fmt.Errorf("DataParams[%d]: IterationVariable must not have a Format with the feedback and double-pipeline KDFs (pValue must be NULL_PTR)", i)
			}
		}
		if sp800108 && counter && optional {
			return fmt.Errorf("DataParams[%d]: OptionalCounter is not allowed with CKM_SP800_108_COUNTER_KDF", i)
		}
	}
	if sp800108 && iterations != 1 {
		return fmt.Errorf("DataParams has %d IterationVariable entries, want exactly 1", iterations)
	}
	return nil
}

// HKDFParams mirrors CK_HKDF_PARAMS, which "provides the parameters to the
// CKM_HKDF_DERIVE and CKM_HKDF_DATA mechanisms":
//
//	typedef struct CK_HKDF_PARAMS {
//		CK_BBOOL bExtract;
//		CK_BBOOL bExpand;
//		CK_MECHANISM_TYPE prfHashMechanism;
//		CK_ULONG ulSaltType;
//		CK_BYTE_PTR pSalt;
//		CK_ULONG ulSaltLen;
//		CK_OBJECT_HANDLE hSaltKey;
//		CK_BYTE_PTR pInfo;
//		CK_ULONG ulInfoLen;
//	} CK_HKDF_PARAMS;
type HKDFParams struct {
	// Extract: bExtract, "execute the extract portion of HKDF".
	Extract bool `p11:"bExtract"`
	// Expand: bExpand, "execute the expand portion of HKDF".
	Expand bool `p11:"bExpand"`
	// PRFHashMechanism: prfHashMechanism, "base hash used for the HMAC in
	// the underlying HKDF operation" (e.g. CKM_SHA256).
	PRFHashMechanism uint `p11:"prfHashMechanism"`
	// SaltType: ulSaltType, "specifies how the salt for the extract portion
	// of the KDF is supplied": CKF_HKDF_SALT_NULL, CKF_HKDF_SALT_DATA or
	// CKF_HKDF_SALT_KEY. It may be 0 only when Extract is false.
	SaltType uint `p11:"ulSaltType"`
	// Salt: pSalt "pointer to the salt", ulSaltLen "length of the salt
	// pointed to in pSalt". Required with CKF_HKDF_SALT_DATA, empty
	// otherwise.
	Salt []byte `p11:"ptr:pSalt,len:ulSaltLen"`
	// SaltKey: hSaltKey, "object handle to the salt key". Required with
	// CKF_HKDF_SALT_KEY, zero otherwise.
	SaltKey pkcs11.ObjectHandle `p11:"hSaltKey"`
	// Info: pInfo "info string for the expand stage", ulInfoLen "length of
	// the info string for the expand stage".
	Info []byte `p11:"ptr:pInfo,len:ulInfoLen"`
}

func (p HKDFParams) validate(uint) error {
	if !p.Extract && !p.Expand {
		return errors.New("neither Extract nor Expand is set")
	}
	switch p.SaltType {
	case 0:
		if p.Extract {
			return errors.New("Extract is set but SaltType is 0; use CKF_HKDF_SALT_NULL, CKF_HKDF_SALT_DATA or CKF_HKDF_SALT_KEY")
		}
		if len(p.Salt) != 0 || p.SaltKey != 0 {
			return errors.New("Salt or SaltKey set without a SaltType")
		}
	case CKF_HKDF_SALT_NULL:
		if len(p.Salt) != 0 || p.SaltKey != 0 {
			return errors.New("SaltType is CKF_HKDF_SALT_NULL but Salt or SaltKey is set")
		}
	case CKF_HKDF_SALT_DATA:
		if len(p.Salt) == 0 {
			return errors.New("SaltType is CKF_HKDF_SALT_DATA but Salt is empty")
		}
		if p.SaltKey != 0 {
			return errors.New("SaltType is CKF_HKDF_SALT_DATA but SaltKey is set")
		}
	case CKF_HKDF_SALT_KEY:
		if p.SaltKey == 0 {
			return errors.New("SaltType is CKF_HKDF_SALT_KEY but SaltKey is CK_INVALID_HANDLE")
		}
		if len(p.Salt) != 0 {
			return errors.New("SaltType is CKF_HKDF_SALT_KEY but Salt is set")
		}
	default:
		return fmt.Errorf("SaltType %#x is not one of CKF_HKDF_SALT_NULL, CKF_HKDF_SALT_DATA, CKF_HKDF_SALT_KEY", p.SaltType)
	}
	return nil
}

func (p AESCBCEncryptDataParams) validate(uint) error { return checkBlocks(p.Data, 16) }
func (p DESCBCEncryptDataParams) validate(uint) error { return checkBlocks(p.Data, 8) }

func checkBlocks(data []byte, block int) error {
	if len(data) == 0 || len(data)%block != 0 {
		return fmt.Errorf("Data is %d bytes, want a non-zero multiple of the %d-byte block size", len(data), block)
	}
	return nil
}

func (p AESCTRParams) validate(uint) error {
	if p.CounterBits == 0 || p.CounterBits > 128 {
		return fmt.Errorf("CounterBits is %d, the specification requires 0 < ulCounterBits <= 128", p.CounterBits)
	}
	return nil
}
