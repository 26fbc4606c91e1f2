// Package ref holds the software reference implementations that the probe
// (and tests) check a token's derived keys against: AES, Triple DES and DES
// in ECB and CBC mode, CMAC, the SP 800-108 KDFs in counter and feedback
// mode with HMAC-SHA-256/384/512 and AES-CMAC PRFs, HKDF, SHA-256(K || data)
// and key check values.
//
// Every function here is anchored in ref_test.go to a published vector
// (FIPS 197, FIPS 81, SP 800-67, SP 800-38A, SP 800-38B / RFC 4493,
// RFC 5869, NIST CAVP KBKDF), so that a token's answer is compared with
// something that is known to be right, not with another copy of the same
// mistake. The reference computes keys in host memory: it is for known test
// keys only, never for a real base key (whose value p11derive never sees).
package ref

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
)

// Cipher is a block cipher of the reference.
type Cipher int

// The block ciphers.
const (
	AES  Cipher = iota + 1 // FIPS 197; 16-, 24- or 32-byte keys
	DES3                   // Triple DES (TDEA, SP 800-67); 16-byte (two-key) or 24-byte keys
	DES                    // single DES (FIPS 46-3); 8-byte keys
)

func (c Cipher) String() string {
	switch c {
	case AES:
		return "aes"
	case DES3:
		return "des3"
	case DES:
		return "des"
	}
	return fmt.Sprintf("cipher(%d)", int(c))
}

// BlockSize is the cipher's block size in bytes.
func (c Cipher) BlockSize() int {
	if c == AES {
		return 16
	}
	return 8
}

// NewBlock returns the cipher keyed with key. A 16-byte Triple DES key is
// two-key TDEA: K1 || K2 || K1.
func NewBlock(c Cipher, key []byte) (cipher.Block, error) {
	switch c {
	case AES:
		return aes.NewCipher(key)
	case DES3:
		switch len(key) {
		case 16:
			k := make([]byte, 0, 24)
			k = append(append(k, key...), key[:8]...)
			return des.NewTripleDESCipher(k)
		case 24:
			return des.NewTripleDESCipher(key)
		}
		return nil, fmt.Errorf("ref: a Triple DES key is 16 or 24 bytes, not %d", len(key))
	case DES:
		return des.NewCipher(key)
	}
	return nil, fmt.Errorf("ref: unknown cipher %v", c)
}

func blocks(b cipher.Block, data []byte) error {
	if len(data)%b.BlockSize() != 0 {
		return fmt.Errorf("ref: %d bytes is not a whole number of %d-byte blocks", len(data), b.BlockSize())
	}
	return nil
}

// EncryptECB encrypts data, a whole number of blocks, in ECB mode.
func EncryptECB(b cipher.Block, data []byte) ([]byte, error) {
	if err := blocks(b, data); err != nil {
		return nil, err
	}
	n := b.BlockSize()
	out := make([]byte, len(data))
	for i := 0; i < len(data); i += n {
		b.Encrypt(out[i:i+n], data[i:i+n])
	}
	return out, nil
}

// DecryptECB decrypts data, a whole number of blocks, in ECB mode.
func DecryptECB(b cipher.Block, data []byte) ([]byte, error) {
	if err := blocks(b, data); err != nil {
		return nil, err
	}
	n := b.BlockSize()
	out := make([]byte, len(data))
	for i := 0; i < len(data); i += n {
		b.Decrypt(out[i:i+n], data[i:i+n])
	}
	return out, nil
}

// EncryptCBC encrypts data, a whole number of blocks, in CBC mode from iv.
func EncryptCBC(b cipher.Block, iv, data []byte) ([]byte, error) {
	if err := blocks(b, data); err != nil {
		return nil, err
	}
	if len(iv) != b.BlockSize() {
		return nil, fmt.Errorf("ref: the IV is %d bytes, not one %d-byte block", len(iv), b.BlockSize())
	}
	out := make([]byte, len(data))
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, data)
	return out, nil
}

// DecryptCBC decrypts data, a whole number of blocks, in CBC mode from iv.
func DecryptCBC(b cipher.Block, iv, data []byte) ([]byte, error) {
	if err := blocks(b, data); err != nil {
		return nil, err
	}
	if len(iv) != b.BlockSize() {
		return nil, fmt.Errorf("ref: the IV is %d bytes, not one %d-byte block", len(iv), b.BlockSize())
	}
	out := make([]byte, len(data))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, data)
	return out, nil
}

// CheckValue is a key's check value: the first 3 bytes of E_key(0^n).
func CheckValue(c Cipher, key []byte) ([]byte, error) {
	b, err := NewBlock(c, key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, b.BlockSize())
	b.Encrypt(out, out)
	return out[:3], nil
}

// CMAC is the CMAC of msg under b (NIST SP 800-38B, RFC 4493), for 16- and
// 8-byte block ciphers: a full block of output.
func CMAC(b cipher.Block, msg []byte) []byte {
	n := b.BlockSize()
	l := make([]byte, n)
	b.Encrypt(l, l)
	k1 := dbl(l)
	k2 := dbl(k1)
	var last []byte
	full := len(msg) > 0 && len(msg)%n == 0
	if full {
		last = xor(msg[len(msg)-n:], k1)
		msg = msg[:len(msg)-n]
	} else {
		r := len(msg) % n
		pad := make([]byte, n)
		copy(pad, msg[len(msg)-r:])
		pad[r] = 0x80
		last = xor(pad, k2)
		msg = msg[:len(msg)-r]
	}
	x := make([]byte, n)
	for i := 0; i < len(msg); i += n {
		copy(x, xor(x, msg[i:i+n]))
		b.Encrypt(x, x)
	}
	copy(x, xor(x, last))
	b.Encrypt(x, x)
	return x
}

// dbl doubles in GF(2^(8n)) (SP 800-38B §6.1): shift left one bit, and XOR
// the last byte with 0x87 (n = 16) or 0x1B (n = 8) if the top bit was set.
func dbl(in []byte) []byte {
	out := make([]byte, len(in))
	var carry byte
	for i := len(in) - 1; i >= 0; i-- {
		out[i] = in[i]<<1 | carry
		carry = in[i] >> 7
	}
	if carry != 0 {
		if len(in) == 16 {
			out[len(out)-1] ^= 0x87
		} else {
			out[len(out)-1] ^= 0x1B
		}
	}
	return out
}

func xor(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// PRF is a pseudorandom function of SP 800-108: a MAC keyed with the KDF's
// key, of Size bytes of output.
type PRF struct {
	Name string
	Size int
	MAC  func(key, msg []byte) ([]byte, error)
}

func hmacPRF(name string, h func() hash.Hash) PRF {
	return PRF{Name: name, Size: h().Size(), MAC: func(key, msg []byte) ([]byte, error) {
		m := hmac.New(h, key)
		m.Write(msg)
		return m.Sum(nil), nil
	}}
}

// The PRFs.
var (
	HMACSHA256 = hmacPRF("hmac-sha256", sha256.New)
	HMACSHA384 = hmacPRF("hmac-sha384", sha512.New384)
	HMACSHA512 = hmacPRF("hmac-sha512", sha512.New)
	AESCMAC    = PRF{Name: "aes-cmac", Size: 16, MAC: func(key, msg []byte) ([]byte, error) {
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return CMAC(b, msg), nil
	}}
)

// KDFCounter is the SP 800-108 KDF in counter mode: the first n bytes of
// K(1) || K(2) || ..., K(i) = PRF(key, input(i)). input lays out the PRF's
// message for iteration i, counter included (for NIST's layout,
// [i]_r || Label || 0x00 || Context || [L]_32).
func KDFCounter(prf PRF, key []byte, n int, input func(i uint32) []byte) ([]byte, error) {
	out := make([]byte, 0, n+prf.Size)
	for i := uint32(1); len(out) < n; i++ {
		k, err := prf.MAC(key, input(i))
		if err != nil {
			return nil, err
		}
		out = append(out, k...)
	}
	return out[:n], nil
}

// KDFFeedback is the SP 800-108 KDF in feedback mode: the first n bytes of
// K(1) || K(2) || ..., K(i) = PRF(key, input(i, K(i-1))), K(0) = iv (which
// may be empty). input lays out the PRF's message, K(i-1) and the optional
// counter included.
func KDFFeedback(prf PRF, key, iv []byte, n int, input func(i uint32, prev []byte) []byte) ([]byte, error) {
	out := make([]byte, 0, n+prf.Size)
	prev := iv
	for i := uint32(1); len(out) < n; i++ {
		k, err := prf.MAC(key, input(i, prev))
		if err != nil {
			return nil, err
		}
		out = append(out, k...)
		prev = k
	}
	return out[:n], nil
}

// BE returns v big-endian in bits/8 bytes (bits a multiple of 8, up to 64).
func BE(v uint64, bits int) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return append([]byte(nil), b[8-bits/8:]...)
}

// LE returns v little-endian in bits/8 bytes (bits a multiple of 8, up to 64).
func LE(v uint64, bits int) []byte {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return append([]byte(nil), b[:bits/8]...)
}

// HKDFExtract is HKDF-Extract (RFC 5869 §2.2): PRK = HMAC-Hash(salt, ikm).
// An empty salt is HashLen zero bytes.
func HKDFExtract(h func() hash.Hash, salt, ikm []byte) []byte {
	if len(salt) == 0 {
		salt = make([]byte, h().Size())
	}
	m := hmac.New(h, salt)
	m.Write(ikm)
	return m.Sum(nil)
}

// HKDFExpand is HKDF-Expand (RFC 5869 §2.3): the first n bytes of
// T(1) || T(2) || ..., T(i) = HMAC-Hash(prk, T(i-1) || info || i).
func HKDFExpand(h func() hash.Hash, prk, info []byte, n int) ([]byte, error) {
	if n > 255*h().Size() {
		return nil, fmt.Errorf("ref: HKDF-Expand makes at most %d bytes, not %d", 255*h().Size(), n)
	}
	var out, t []byte
	for i := 1; len(out) < n; i++ {
		m := hmac.New(h, prk)
		m.Write(t)
		m.Write(info)
		m.Write([]byte{byte(i)})
		t = m.Sum(nil)
		out = append(out, t...)
	}
	return out[:n], nil
}

// HKDF is HKDF-Expand(HKDF-Extract(salt, ikm), info, n).
func HKDF(h func() hash.Hash, ikm, salt, info []byte, n int) ([]byte, error) {
	return HKDFExpand(h, HKDFExtract(h, salt, ikm), info, n)
}

// SHA256Concat is SHA-256(key || data), the legacy hash KDF of
// CKM_CONCATENATE_BASE_AND_DATA followed by CKM_SHA256_KEY_DERIVATION.
func SHA256Concat(key, data []byte) []byte {
	h := sha256.New()
	h.Write(key)
	h.Write(data)
	return h.Sum(nil)
}
