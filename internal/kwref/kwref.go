// Package kwref is a software reference of the AES key-wrap algorithms, for
// tests that check what a token's C_WrapKey produced: RFC 3394 (CKM_AES_KEY_WRAP),
// RFC 5649 (what SoftHSM2 2.6.1 computes for CKM_AES_KEY_WRAP_PAD) and RFC 3394
// over a PKCS#7-padded key (CKM_AES_KEY_WRAP_PAD as PKCS#11 3.0 defines it, and
// as NSS softoken computes it). Tests only: a token wraps keys, never the host.
package kwref

import (
	"crypto/aes"
	"encoding/binary"
	"fmt"
)

// IV is RFC 3394's default initial value.
const IV = 0xA6A6A6A6A6A6A6A6

// Wrap is RFC 3394 key wrap of p (a multiple of 8 bytes, at least 16) under
// kek, with the initial value iv.
func Wrap(kek []byte, iv uint64, p []byte) ([]byte, error) {
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	if len(p)%8 != 0 || len(p) < 16 {
		return nil, fmt.Errorf("kwref: RFC 3394 wraps a multiple of 8 bytes, at least 16, not %d", len(p))
	}
	n := len(p) / 8
	r := append([]byte{}, p...)
	a := iv
	var blk [16]byte
	for j := range 6 {
		for i := 1; i <= n; i++ {
			binary.BigEndian.PutUint64(blk[:8], a)
			copy(blk[8:], r[(i-1)*8:i*8])
			b.Encrypt(blk[:], blk[:])
			a = binary.BigEndian.Uint64(blk[:8]) ^ uint64(n*j+i)
			copy(r[(i-1)*8:], blk[8:])
		}
	}
	return append(binary.BigEndian.AppendUint64(nil, a), r...), nil
}

// WrapPad is AES key wrap with padding, RFC 5649.
func WrapPad(kek, p []byte) ([]byte, error) {
	if len(p) == 0 {
		return nil, fmt.Errorf("kwref: nothing to wrap")
	}
	aiv := uint64(0xA65959A6)<<32 | uint64(len(p))
	padded := append(append([]byte{}, p...), make([]byte, (8-len(p)%8)%8)...)
	if len(padded) == 8 {
		b, err := aes.NewCipher(kek)
		if err != nil {
			return nil, err
		}
		blk := append(binary.BigEndian.AppendUint64(nil, aiv), padded...)
		b.Encrypt(blk, blk)
		return blk, nil
	}
	return Wrap(kek, aiv, padded)
}

// WrapPKCS7 is RFC 3394 over p padded PKCS#7-style to a multiple of 8 bytes
// (a whole block of padding when p is one already).
func WrapPKCS7(kek, p []byte) ([]byte, error) {
	n := 8 - len(p)%8
	padded := append(append([]byte{}, p...), make([]byte, n)...)
	for i := len(p); i < len(padded); i++ {
		padded[i] = byte(n)
	}
	return Wrap(kek, IV, padded)
}
