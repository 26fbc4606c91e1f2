package derive

import (
	"context"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/mechanisms"
)

// native computes a function with the token's own derivation mechanisms:
// for Encrypt, one C_DeriveKey with CKM_<cipher>_<mode>_ENCRYPT_DATA
// (docs/design.md §3.1); for the key-derivation functions, their PKCS#11
// mechanism. The base key needs CKA_DERIVE.
type native struct{}

func (native) name() Strategy { return Native }

func (native) computes(f Function) bool {
	_, ok := f.(nativeFunction)
	return ok
}

func (native) cost(r *Request) int { return r.Function.(nativeFunction).nativeCalls(r.Data) }

func (native) needs(f Function) ([]uint, []uint) {
	return f.(nativeFunction).nativeMechanisms(), []uint{pkcs11.CKA_DERIVE}
}

func (native) flags(f Function) []uint {
	fl := make([]uint, len(f.(nativeFunction).nativeMechanisms()))
	for i := range fl {
		fl[i] = pkcs11.CKF_DERIVE
	}
	return fl
}

func (n native) check(t *Token, base *Key, f Function) error {
	if e, ok := f.(Encrypt); ok && base.Derive {
		// The hot path: one mechanism, nothing missing, no slice made.
		return t.listed(mechUse{encryptDataMechanism(e), pkcs11.CKF_DERIVE})
	}
	mechs := f.(nativeFunction).nativeMechanisms()
	lerr := t.listed(uses(mechs, n.flags(f))...)
	var missing []string
	if !base.Derive {
		missing = append(missing, "CKA_DERIVE")
	}
	return needsAttrs(base, lerr, ckm.Name(mechs[0]), missing)
}

func (native) run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	return r.Function.(nativeFunction).deriveNative(s, base, r.Data, tmpl)
}

// Encrypt's native derivation.

func (f Encrypt) nativeMechanisms() []uint { return []uint{encryptDataMechanism(f)} }

func (f Encrypt) nativeCalls([]byte) int { return 1 }

func (f Encrypt) deriveNative(s *session, base *Key, data []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	// The parameter is built by ck on the C stack (nothing allocated); the
	// lengths were checked by validate, as mechanisms.Call would.
	switch {
	case f.Mode == ECB:
		return s.deriveKeyData("derive DK", encryptDataMechanism(f), nil, data, base.Handle, tmpl)
	case f.Cipher == AES && len(f.IV) == 16, f.Cipher != AES && len(f.IV) == 8:
		return s.deriveKeyData("derive DK", encryptDataMechanism(f), f.IV, data, base.Handle, tmpl)
	}
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
	err := mechanisms.Call(encryptDataMechanism(f), params, func(m []*pkcs11.Mechanism) error {
		var err error
		h, err = s.deriveKey("derive DK", m, base.Handle, tmpl)
		return err
	})
	return h, err
}

// encryptDataMechanism is the *_ENCRYPT_DATA mechanism computing f.
func encryptDataMechanism(f Encrypt) uint {
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
