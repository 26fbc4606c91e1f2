package derive

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/mechanisms"
)

// native computes E(data, K) with one C_DeriveKey call and a
// CKM_<cipher>_<mode>_ENCRYPT_DATA mechanism (DESIGN.md §3.1). The base key
// needs CKA_DERIVE.
type native struct{}

func (native) name() Strategy { return Native }

func (native) computes(f Function) bool {
	_, ok := f.(Encrypt)
	return ok
}

func (native) cost(Function, []byte) int { return 1 }

// nativeMechanism is the *_ENCRYPT_DATA mechanism computing f.
func nativeMechanism(f Encrypt) uint {
	switch {
	case f.Cipher == AES && f.Mode == ECB:
		return pkcs11.CKM_AES_ECB_ENCRYPT_DATA
	case f.Cipher == AES && f.Mode == CBC:
		return pkcs11.CKM_AES_CBC_ENCRYPT_DATA
	case f.Cipher == DES3 && f.Mode == ECB:
		return pkcs11.CKM_DES3_ECB_ENCRYPT_DATA
	case f.Cipher == DES3 && f.Mode == CBC:
		return pkcs11.CKM_DES3_CBC_ENCRYPT_DATA
	case f.Cipher == DES && f.Mode == ECB:
		return pkcs11.CKM_DES_ECB_ENCRYPT_DATA
	case f.Cipher == DES && f.Mode == CBC:
		return pkcs11.CKM_DES_CBC_ENCRYPT_DATA
	}
	return 0
}

func (native) check(t *Token, base *Key, f Function) error {
	mech := nativeMechanism(f.(Encrypt))
	if !base.Derive {
		return &KeyError{Key: base.name(), Reason: ErrMissingAttribute,
			Problem: fmt.Sprintf("%s needs CKA_DERIVE=true on the base key", mechanismName(mech))}
	}
	return t.listed(mechanismName(mech), mech)
}

func (native) run(ctx context.Context, s *session, base *Key, fn Function, data []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	f := fn.(Encrypt)
	var params mechanisms.Params
	switch {
	case f.Mode == ECB:
		params = &mechanisms.KeyDerivationStringData{Data: data}
	case f.Cipher == AES:
		p := &mechanisms.AESCBCEncryptDataParams{Data: data}
		copy(p.IV[:], f.IV)
		params = p
	default:
		p := &mechanisms.DESCBCEncryptDataParams{Data: data}
		copy(p.IV[:], f.IV)
		params = p
	}
	var h pkcs11.ObjectHandle
	err := mechanisms.Call(nativeMechanism(f), params, func(m []*pkcs11.Mechanism) error {
		var err error
		h, err = s.deriveKey("derive DK", m, base.Handle, tmpl)
		return err
	})
	return h, err
}

func mechanismName(m uint) string {
	switch m {
	case pkcs11.CKM_AES_ECB_ENCRYPT_DATA:
		return "CKM_AES_ECB_ENCRYPT_DATA"
	case pkcs11.CKM_AES_CBC_ENCRYPT_DATA:
		return "CKM_AES_CBC_ENCRYPT_DATA"
	case pkcs11.CKM_DES3_ECB_ENCRYPT_DATA:
		return "CKM_DES3_ECB_ENCRYPT_DATA"
	case pkcs11.CKM_DES3_CBC_ENCRYPT_DATA:
		return "CKM_DES3_CBC_ENCRYPT_DATA"
	case pkcs11.CKM_DES_ECB_ENCRYPT_DATA:
		return "CKM_DES_ECB_ENCRYPT_DATA"
	case pkcs11.CKM_DES_CBC_ENCRYPT_DATA:
		return "CKM_DES_CBC_ENCRYPT_DATA"
	}
	return fmt.Sprintf("CKM(%#x)", m)
}
