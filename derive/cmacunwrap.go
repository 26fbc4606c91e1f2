package derive

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// cmacUnwrap is mac-unwrap (macunwrap.go) with CMAC, for tokens without a
// full-block CBC-MAC. CMAC_K(x || y) for a full last block y is
// E_K(CBC-MAC_K(x) XOR y XOR K1), K1 = dbl(L), L = E_K(0^n): appending
// y = K1 to every MAC input gives E_K(CBC-MAC_K(x)) again, the w_i of
// mac-unwrap's chain (macChain), and one C_UnwrapKey in ECB lands DK.
// Computing L needs CKA_ENCRYPT and 2 more calls.
type cmacUnwrap struct{}

func (cmacUnwrap) name() Strategy { return CMACUnwrap }

func (cmacUnwrap) computes(f Function) bool {
	e, ok := f.(Encrypt)
	return ok && e.Cipher != DES // PKCS#11 has no single-DES CMAC
}

func (cmacUnwrap) cost(r *Request) int {
	k := blocksFor(r.Function.(Encrypt).Cipher, r.KeyType)
	// C_EncryptInit + C_Encrypt for L, C_SignInit + C_Sign per block,
	// C_UnwrapKey.
	return 2 + 2*k + 1
}

// mechanisms are the CMAC and ECB mechanisms for c (AES or DES3).
func (cmacUnwrap) mechanisms(c Cipher) (mac, ecb uint) {
	if c == DES3 {
		return pkcs11.CKM_DES3_CMAC, pkcs11.CKM_DES3_ECB
	}
	return pkcs11.CKM_AES_CMAC, pkcs11.CKM_AES_ECB
}

func (m cmacUnwrap) needs(f Function) ([]uint, []uint) {
	mac, ecb := m.mechanisms(f.(Encrypt).Cipher)
	return []uint{mac, ecb}, []uint{pkcs11.CKA_SIGN, pkcs11.CKA_UNWRAP, pkcs11.CKA_ENCRYPT}
}

// flags: the CMAC signs; ECB unwraps DK and encrypts L.
func (cmacUnwrap) flags(Function) []uint {
	return []uint{pkcs11.CKF_SIGN, pkcs11.CKF_UNWRAP | pkcs11.CKF_ENCRYPT}
}

func (m cmacUnwrap) check(t *Token, base *Key, f Function) error {
	mac, ecb := m.mechanisms(f.(Encrypt).Cipher)
	return macCheck(t, base, mac, ecb, m.flags(f), true)
}

func (m cmacUnwrap) run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	f := r.Function.(Encrypt)
	mac, ecb := m.mechanisms(f.Cipher)
	var k1 [16]byte
	var out [128]byte // room for L
	defer clear(k1[:])
	if err := s.cmacSubkey(k1[:f.Cipher.BlockSize()], ecb, base.Handle, out[:]); err != nil {
		return 0, err
	}
	return macChain(ctx, s, base, r, tmpl, mac, nil, ecb, k1[:f.Cipher.BlockSize()])
}

// cmacSubkey sets k1 to the CMAC subkey K1 = dbl(L), L = E_K(0^n), with one
// C_EncryptInit and C_Encrypt in ecb (n = len(k1)). out is room for L,
// cleared after use.
func (s *session) cmacSubkey(k1 []byte, ecb uint, base pkcs11.ObjectHandle, out []byte) error {
	n := len(k1)
	var zero [16]byte
	l, err := s.encryptInto("CMAC subkey: L = E_K(0)", ecb, nil, base, zero[:n], out[:n+64])
	if err != nil {
		return err
	}
	if len(l) != n {
		clear(out)
		return s.fail("CMAC subkey: L = E_K(0)", "C_Encrypt", fmt.Errorf("%d bytes of output, want %d", len(l), n))
	}
	dbl(k1, l)
	clear(out)
	return nil
}

// dbl sets dst to the CMAC doubling of src in GF(2^(8·len)): shift left by
// one bit, and XOR the last byte with 0x87 (16-byte blocks) or 0x1B (8-byte
// blocks) when the top bit was set (NIST SP 800-38B §6.1).
func dbl(dst, src []byte) {
	var carry byte
	for i := len(src) - 1; i >= 0; i-- {
		b := src[i]
		dst[i] = b<<1 | carry
		carry = b >> 7
	}
	if carry != 0 {
		if len(src) == 16 {
			dst[len(dst)-1] ^= 0x87
		} else {
			dst[len(dst)-1] ^= 0x1B
		}
	}
}
