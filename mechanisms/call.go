package mechanisms

import (
	"errors"
	"fmt"
	"reflect"

	"github.com/miekg/pkcs11"
)

// Call marshals p into C memory, passes fn the mechanism (ready for miekg's
// ctx.DeriveKey / SignInit / UnwrapKey / EncryptInit ...), and frees all C
// memory when fn returns (also on panic). Output fields (DerivedKey.Handle)
// are copied back into p before freeing, whenever fn returns normally (also
// with an error; a handle the token did not write reads CK_INVALID_HANDLE).
// Derived keys live in a slice, so the caller sees the handles whether p is
// passed by value or by pointer. p may be nil for mechanisms without
// parameters.
//
// Call returns an error, without calling fn and without allocating, if p
// holds an invalid value or if mechanism is one whose parameter type is
// known and p is of another type. Otherwise it returns the error of fn. fn
// must not keep the mechanism slice: the pointers inside its parameter are
// only valid until fn returns.
func Call(mechanism uint, p Params, fn func(m []*pkcs11.Mechanism) error) error {
	if fn == nil {
		return errors.New("mechanisms: Call with nil fn")
	}
	if p == nil {
		if err := checkMechanism(mechanism, nil); err != nil {
			return err
		}
		return fn([]*pkcs11.Mechanism{pkcs11.NewMechanism(mechanism, nil)})
	}
	m, err := marshal(mechanism, p)
	if err != nil {
		return err
	}
	defer m.free()
	err = fn([]*pkcs11.Mechanism{pkcs11.NewMechanism(mechanism, m.param)})
	m.copyBack()
	return err
}

// paramTypes maps the mechanisms whose parameter type this package knows to
// that type (nil: the mechanism takes no parameter). Call refuses a
// parameter of another type for them, since the token would read it as the
// wrong C structure. Mechanisms not listed are passed through unchecked.
var paramTypes = map[uint]reflect.Type{
	CKM_SP800_108_COUNTER_KDF:         reflect.TypeFor[SP800108KDFParams](),
	CKM_SP800_108_DOUBLE_PIPELINE_KDF: reflect.TypeFor[SP800108KDFParams](),
	CKM_SP800_108_FEEDBACK_KDF:        reflect.TypeFor[SP800108FeedbackKDFParams](),

	CKM_HKDF_DERIVE:  reflect.TypeFor[HKDFParams](),
	CKM_HKDF_DATA:    reflect.TypeFor[HKDFParams](),
	CKM_HKDF_KEY_GEN: nil,

	pkcs11.CKM_AES_CBC_ENCRYPT_DATA:  reflect.TypeFor[AESCBCEncryptDataParams](),
	pkcs11.CKM_DES_CBC_ENCRYPT_DATA:  reflect.TypeFor[DESCBCEncryptDataParams](),
	pkcs11.CKM_DES3_CBC_ENCRYPT_DATA: reflect.TypeFor[DESCBCEncryptDataParams](),

	pkcs11.CKM_CONCATENATE_BASE_AND_DATA: reflect.TypeFor[KeyDerivationStringData](),
	pkcs11.CKM_CONCATENATE_DATA_AND_BASE: reflect.TypeFor[KeyDerivationStringData](),
	pkcs11.CKM_XOR_BASE_AND_DATA:         reflect.TypeFor[KeyDerivationStringData](),
	pkcs11.CKM_AES_ECB_ENCRYPT_DATA:      reflect.TypeFor[KeyDerivationStringData](),
	pkcs11.CKM_DES_ECB_ENCRYPT_DATA:      reflect.TypeFor[KeyDerivationStringData](),
	pkcs11.CKM_DES3_ECB_ENCRYPT_DATA:     reflect.TypeFor[KeyDerivationStringData](),

	pkcs11.CKM_AES_CTR: reflect.TypeFor[AESCTRParams](),

	pkcs11.CKM_AES_MAC_GENERAL:       reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_AES_CMAC_GENERAL:      reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_DES3_MAC_GENERAL:      reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_DES3_CMAC_GENERAL:     reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA_1_HMAC_GENERAL:    reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA224_HMAC_GENERAL:   reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA256_HMAC_GENERAL:   reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA384_HMAC_GENERAL:   reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA512_HMAC_GENERAL:   reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA3_224_HMAC_GENERAL: reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA3_256_HMAC_GENERAL: reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA3_384_HMAC_GENERAL: reflect.TypeFor[MACGeneralParams](),
	pkcs11.CKM_SHA3_512_HMAC_GENERAL: reflect.TypeFor[MACGeneralParams](),
}

// checkMechanism refuses a parameter type (nil: none) that does not belong
// to a known mechanism.
func checkMechanism(mechanism uint, t reflect.Type) error {
	want, known := paramTypes[mechanism]
	if !known || want == t {
		return nil
	}
	switch {
	case want == nil:
		return fmt.Errorf("mechanisms: mechanism %#x takes no parameter, got %v", mechanism, t)
	case t == nil:
		return fmt.Errorf("mechanisms: mechanism %#x needs a %v parameter", mechanism, want)
	}
	return fmt.Errorf("mechanisms: mechanism %#x takes a %v parameter, got %v", mechanism, want, t)
}
