package derive

import (
	"context"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// unwrap is the Unwrap strategy: Decrypt in one C_UnwrapKey.
type unwrap struct{}

func (unwrap) name() Strategy { return Unwrap }

func (unwrap) computes(f Function) bool {
	_, ok := f.(Decrypt)
	return ok
}

func (unwrap) cost(*Request) int { return 1 }

func (unwrap) needs(f Function) ([]uint, []uint) {
	return []uint{unwrapMechanism(f.(Decrypt))}, []uint{pkcs11.CKA_UNWRAP}
}

func (unwrap) flags(Function) []uint { return []uint{pkcs11.CKF_UNWRAP} }

func (unwrap) check(t *Token, base *Key, f Function) error {
	mech := unwrapMechanism(f.(Decrypt))
	lerr := t.listed(mechUse{mech, pkcs11.CKF_UNWRAP})
	var missing []string
	if !base.Unwrap {
		missing = append(missing, "CKA_UNWRAP")
	}
	if len(missing) == 0 {
		return lerr // the hot path: no name built
	}
	return needsAttrs(base, lerr, ckm.Name(mech)+" unwrap", missing)
}

func (unwrap) run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	f := r.Function.(Decrypt)
	n := f.Cipher.BlockSize()
	// Only the blocks the key needs: each CBC plaintext block depends on
	// its ciphertext block and the one before only.
	k := blocksFor(f.Cipher, r.KeyType)
	var param []byte
	if f.Mode == CBC {
		param = f.IV
	}
	return s.unwrapKeyDK("unwrap DK", unwrapMechanism(f), param, base.Handle, r.Data[:k*n], tmpl)
}
