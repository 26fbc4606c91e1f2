package derive

import (
	"context"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// Decrypt is the inverse-cipher derivation DK = D(data, K): the decryption
// of the derivation data under the base key, in ECB or CBC mode, keeping
// the leading bytes the output key needs. It is a different function from
// Encrypt — different keys — and a sound KDF when the other side computes D
// too. Nearly every token that can unwrap computes it (the Unwrap
// strategy): C_UnwrapKey exists to decrypt a key into the token.
//
// With ECB, DK = D_K(d_1) || ... || D_K(d_m); with CBC,
// DK_i = D_K(d_i) XOR d_(i-1), d_0 = IV.
type Decrypt struct {
	Cipher Cipher
	Mode   Mode
	// IV is the CBC initialisation vector, one block; empty for ECB.
	IV []byte
}

// Name returns "aes-ecb-decrypt", "des3-cbc-decrypt" and so on.
func (f Decrypt) Name() string { return f.Cipher.String() + "-" + f.Mode.String() + "-decrypt" }

func (f Decrypt) validate(data []byte, out KeyType) error {
	return validateBlocks(f.Cipher, f.Mode, f.IV, data, out)
}

func (f Decrypt) checkBase(base *Key) error {
	if base.Cipher() != f.Cipher {
		return cipherKeyError(f.Name(), f.Cipher, base)
	}
	return nil
}

func (f Decrypt) profile(p *Profile) { p.setHex("iv", f.IV) }

func init() {
	register(parseDecrypt, "aes-ecb-decrypt", "aes-cbc-decrypt", "des3-ecb-decrypt", "des3-cbc-decrypt", "des-ecb-decrypt", "des-cbc-decrypt")
}

func parseDecrypt(name string, m map[string]string) (Function, error) {
	e, err := parseEncrypt(strings.TrimSuffix(name, "-decrypt"), m)
	if err != nil {
		return nil, err
	}
	f := e.(Encrypt)
	return Decrypt{Cipher: f.Cipher, Mode: f.Mode, IV: f.IV}, nil
}

// unwrap is the Unwrap strategy: Decrypt in one C_UnwrapKey.
type unwrap struct{}

func (unwrap) name() Strategy { return Unwrap }

func (unwrap) computes(f Function) bool {
	_, ok := f.(Decrypt)
	return ok
}

func (unwrap) cost(*Request) int { return 1 }

func unwrapMechanism(f Decrypt) uint {
	switch {
	case f.Cipher == AES && f.Mode == ECB:
		return pkcs11.CKM_AES_ECB
	case f.Cipher == AES:
		return pkcs11.CKM_AES_CBC
	case f.Cipher == DES3 && f.Mode == ECB:
		return pkcs11.CKM_DES3_ECB
	case f.Cipher == DES3:
		return pkcs11.CKM_DES3_CBC
	case f.Mode == ECB:
		return pkcs11.CKM_DES_ECB
	}
	return pkcs11.CKM_DES_CBC
}

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
