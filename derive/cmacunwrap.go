package derive

import (
	"fmt"

	"github.com/miekg/pkcs11"
)

// The cmac-unwrap strategy is mac-unwrap with CMAC (macUnwrap{cmac: true},
// in macunwrap.go: one algorithm for both). What CMAC adds is here: the
// subkey K1 appended to every MAC input, so that CMAC_K(x || K1) =
// E_K(CBC-MAC_K(x)).

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
