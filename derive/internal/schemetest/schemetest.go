// Package schemetest holds the software references of the scheme packages
// tests (emv, gp, an10922, dukpt, tr31): check values, block ciphers, ECB
// and CMAC computed in software, to hold against what the lab tokens
// (package labtok) compute.
package schemetest

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"encoding/hex"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"
)

// RefKCV is the check value, in hex, of a key of type ckk (CKK_AES,
// CKK_DES2, CKK_DES3) and value v, computed in software: the first 3
// bytes of E_v(0^n).
func RefKCV(t testing.TB, ckk uint, v []byte) string {
	t.Helper()
	b := Block(t, ckk, v)
	out := make([]byte, b.BlockSize())
	b.Encrypt(out, make([]byte, b.BlockSize()))
	return hex.EncodeToString(out[:3])
}

// Block is the software cipher of a key of type ckk and value v.
func Block(t testing.TB, ckk uint, v []byte) cipher.Block {
	t.Helper()
	var b cipher.Block
	var err error
	switch ckk {
	case pkcs11.CKK_AES:
		b, err = aes.NewCipher(v)
	case pkcs11.CKK_DES2:
		b, err = des.NewTripleDESCipher(append(append([]byte{}, v...), v[:8]...))
	case pkcs11.CKK_DES3:
		b, err = des.NewTripleDESCipher(v)
	default:
		t.Fatalf("no software cipher for key type %#x", ckk)
	}
	require.NoError(t, err)
	return b
}

// ECB encrypts whole blocks in software.
func ECB(b cipher.Block, data []byte) []byte {
	out := make([]byte, len(data))
	for i := 0; i < len(data); i += b.BlockSize() {
		b.Encrypt(out[i:], data[i:i+b.BlockSize()])
	}
	return out
}

// CMAC is CMAC (NIST SP 800-38B) over b, in software, for the test
// references; anchored by TestCMACAnchors to RFC 4493 and SP 800-38B.
func CMAC(b cipher.Block, msg []byte) []byte {
	n := b.BlockSize()
	rb := byte(0x87)
	if n == 8 {
		rb = 0x1b
	}
	dbl := func(in []byte) []byte {
		out := make([]byte, n)
		for i := 0; i < n; i++ {
			out[i] = in[i] << 1
			if i+1 < n {
				out[i] |= in[i+1] >> 7
			}
		}
		if in[0]&0x80 != 0 {
			out[n-1] ^= rb
		}
		return out
	}
	l := make([]byte, n)
	b.Encrypt(l, l)
	k1 := dbl(l)
	k2 := dbl(k1)
	blocks := (len(msg) + n - 1) / n
	last := make([]byte, n)
	if blocks > 0 && len(msg)%n == 0 {
		copy(last, msg[(blocks-1)*n:])
		for i := range last {
			last[i] ^= k1[i]
		}
	} else {
		if blocks == 0 {
			blocks = 1
		}
		rest := msg[(blocks-1)*n:]
		copy(last, rest)
		last[len(rest)] = 0x80
		for i := range last {
			last[i] ^= k2[i]
		}
	}
	x := make([]byte, n)
	for i := 0; i < blocks-1; i++ {
		for j := 0; j < n; j++ {
			x[j] ^= msg[i*n+j]
		}
		b.Encrypt(x, x)
	}
	for j := range x {
		x[j] ^= last[j]
	}
	b.Encrypt(x, x)
	return x
}
