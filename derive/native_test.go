package derive

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// refBlock returns the software reference cipher for a key of type ckk.
func refBlock(t testing.TB, ckk uint, key []byte) cipher.Block {
	t.Helper()
	var b cipher.Block
	var err error
	switch ckk {
	case pkcs11.CKK_AES:
		b, err = aes.NewCipher(key)
	case pkcs11.CKK_DES:
		b, err = des.NewCipher(key)
	case pkcs11.CKK_DES2:
		b, err = des.NewTripleDESCipher(append(append([]byte{}, key...), key[:8]...))
	case pkcs11.CKK_DES3:
		b, err = des.NewTripleDESCipher(key)
	default:
		t.Fatalf("no reference cipher for %#x", ckk)
	}
	require.NoError(t, err)
	return b
}

// refEncrypt is E(data, key) in software: the reference every strategy must match.
func refEncrypt(t testing.TB, ckk uint, key []byte, f Encrypt, data []byte) []byte {
	b := refBlock(t, ckk, key)
	out := make([]byte, len(data))
	if f.Mode == CBC {
		cipher.NewCBCEncrypter(b, f.IV).CryptBlocks(out, data)
		return out
	}
	for i := 0; i < len(data); i += b.BlockSize() {
		b.Encrypt(out[i:], data[i:i+b.BlockSize()])
	}
	return out
}

// refKCV is the check value of a key of type kt and value v, in software.
func refKCV(t testing.TB, kt KeyType, v []byte) []byte {
	b := refBlock(t, kt.ckk, v)
	out := make([]byte, b.BlockSize())
	b.Encrypt(out, make([]byte, b.BlockSize()))
	return out[:3]
}

// The references are themselves anchored to the standards' published answers.
func TestReferenceAnchors(t *testing.T) {
	// FIPS 197 Appendix C.1, AES-128.
	got := refEncrypt(t, pkcs11.CKK_AES, lab.Unhex("000102030405060708090a0b0c0d0e0f"),
		Encrypt{Cipher: AES, Mode: ECB}, lab.Unhex("00112233445566778899aabbccddeeff"))
	assert.Equal(t, "69c4e0d86a7b0430d8cdb78070b4c55a", hex.EncodeToString(got))
	// SP 800-38A F.2.5, CBC-AES256.Encrypt, blocks 1 and 2.
	got = refEncrypt(t, pkcs11.CKK_AES, lab.Unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"),
		Encrypt{Cipher: AES, Mode: CBC, IV: lab.Unhex("000102030405060708090a0b0c0d0e0f")},
		lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"))
	assert.Equal(t, "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d", hex.EncodeToString(got))
	// SP 800-67 Rev. 2, appendix B (TDEA ECB, three keys), first block.
	got = refEncrypt(t, pkcs11.CKK_DES3, lab.Unhex("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123"),
		Encrypt{Cipher: DES3, Mode: ECB}, lab.Unhex("5468652071756663"))
	assert.Equal(t, "a826fd8ce53b855f", hex.EncodeToString(got))
}

type katCase struct {
	name    string
	baseCKK uint
	base    []byte
	f       Encrypt
	data    []byte
	out     KeyType
}

func katCases() []katCase {
	aes128 := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c") // SP 800-38A
	aes256 := lab.Unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
	des2 := lab.Unhex("0123456789abcdeffedcba9876543210")
	des3 := lab.Unhex("0123456789abcdef23456789abcdef01456789abcdef0123")
	iv16 := lab.Unhex("000102030405060708090a0b0c0d0e0f")
	iv8 := lab.Unhex("1234567890abcdef")
	block4 := lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710")
	return []katCase{
		{"aes128/ecb/1block", pkcs11.CKK_AES, aes128, Encrypt{Cipher: AES, Mode: ECB}, block4[:16], KeyAES128},
		{"aes128/ecb/2blocks", pkcs11.CKK_AES, aes128, Encrypt{Cipher: AES, Mode: ECB}, block4[:32], KeyAES256},
		{"aes128/ecb/truncated-to-192", pkcs11.CKK_AES, aes128, Encrypt{Cipher: AES, Mode: ECB}, block4[:32], KeyAES192},
		{"aes128/cbc/1block", pkcs11.CKK_AES, aes128, Encrypt{Cipher: AES, Mode: CBC, IV: iv16}, block4[:16], KeyAES128},
		{"aes256/ecb/2blocks", pkcs11.CKK_AES, aes256, Encrypt{Cipher: AES, Mode: ECB}, block4[:32], KeyAES256},
		{"aes256/cbc/2blocks", pkcs11.CKK_AES, aes256, Encrypt{Cipher: AES, Mode: CBC, IV: iv16}, block4[:32], KeyAES256},
		{"aes256/cbc/4blocks-truncated-to-128", pkcs11.CKK_AES, aes256, Encrypt{Cipher: AES, Mode: CBC, IV: iv16}, block4, KeyAES128},
		{"aes256/ecb/3blocks-to-generic-32", pkcs11.CKK_AES, aes256, Encrypt{Cipher: AES, Mode: ECB}, block4[:48], KeyGeneric(32)},
		{"des2/ecb/des2", pkcs11.CKK_DES2, des2, Encrypt{Cipher: DES3, Mode: ECB}, block4[:16], KeyDES2},
		{"des2/cbc/des2", pkcs11.CKK_DES2, des2, Encrypt{Cipher: DES3, Mode: CBC, IV: iv8}, block4[:16], KeyDES2},
		{"des3/ecb/des3", pkcs11.CKK_DES3, des3, Encrypt{Cipher: DES3, Mode: ECB}, block4[:24], KeyDES3},
		{"des3/cbc/des3", pkcs11.CKK_DES3, des3, Encrypt{Cipher: DES3, Mode: CBC, IV: iv8}, block4[:24], KeyDES3},
		{"des3/cbc/4blocks-truncated-to-des2", pkcs11.CKK_DES3, des3, Encrypt{Cipher: DES3, Mode: CBC, IV: iv8}, block4[:32], KeyDES2},
		{"des3/ecb/truncated-to-aes128", pkcs11.CKK_DES3, des3, Encrypt{Cipher: DES3, Mode: ECB}, block4[:24], KeyAES128},
		{"des/ecb/des", pkcs11.CKK_DES, des2[:8], Encrypt{Cipher: DES, Mode: ECB}, block4[:8], KeyDES},
		{"des/cbc/des2", pkcs11.CKK_DES, des2[:8], Encrypt{Cipher: DES, Mode: CBC, IV: iv8}, block4[:16], KeyDES2},
	}
}

// TestNativeKnownAnswers derives with imported keys of known value on every
// lab token and compares DK (by check value, or by an HMAC for generic
// secrets, both computed in the token) with the software reference.
func TestNativeKnownAnswers(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		for _, c := range katCases() {
			t.Run(c.name, func(t *testing.T) {
				ctx := context.Background()
				base := lt.importKey(t, c.baseCKK, c.base)
				before := lt.objects(t)
				res, err := lt.tok.Derive(ctx, base, Request{Function: c.f, Data: c.data, KeyType: c.out, Strategy: Native})
				if c.f.Cipher == DES {
					// Neither SoftHSM2 2.6.1 nor NSS softoken 3.87 runs
					// CKM_DES_*_ENCRYPT_DATA (single DES: mac-unwrap does it on NSS).
					assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID))
					assert.Equal(t, before, lt.objects(t))
					return
				}
				require.NoError(t, err)
				defer lt.tok.Destroy(ctx, res.Key)
				assert.Equal(t, Native, res.Strategy)
				assert.Equal(t, c.f.Name(), res.Function.Name())
				assert.Equal(t, 1+readBack, res.Calls, "C_DeriveKey, then C_GetAttributeValue to read DK back")
				assert.Equal(t, before+1, lt.objects(t))
				assert.True(t, res.Key.Sensitive)
				assert.False(t, res.Key.Extractable)
				assert.False(t, res.Key.Token)

				want := refEncrypt(t, c.baseCKK, c.base, c.f, c.data)[:c.out.n]
				assertKeyValue(t, lt, res.Key, c.out, want)
			})
		}
	})
}

// assertHMAC checks a generic secret's value by an HMAC-SHA-256 computed
// with it in the token (the output is a MAC, not a block of the key).
func assertHMAC(t *testing.T, lt *labToken, k *Key, want []byte) {
	t.Helper()
	msg := []byte("p11derive generic secret check")
	var got []byte
	require.NoError(t, withSession(lt.tok, func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		if err := ctx.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_HMAC, nil)}, k.Handle); err != nil {
			return err
		}
		var err error
		got, err = ctx.Sign(s, msg)
		return err
	}))
	m := hmac.New(sha256.New, want)
	m.Write(msg)
	assert.True(t, bytes.Equal(m.Sum(nil), got), "HMAC with DK differs from the reference")
}

// TestFIPS197InToken derives the FIPS 197 C.1 ciphertext as a key and checks
// that the token's check value of DK is the reference check value of the
// published ciphertext.
func TestFIPS197InToken(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		base := lt.importKey(t, pkcs11.CKK_AES, lab.Unhex("000102030405060708090a0b0c0d0e0f"))
		res, err := lt.tok.Derive(ctx, base, Request{
			Function: Encrypt{Cipher: AES, Mode: ECB},
			Data:     lab.Unhex("00112233445566778899aabbccddeeff"),
			KeyType:  KeyAES128,
		})
		require.NoError(t, err)
		defer lt.tok.Destroy(ctx, res.Key)
		kcv, err := lt.tok.CheckValue(ctx, res.Key)
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("%x", refKCV(t, KeyAES128, lab.Unhex("69c4e0d86a7b0430d8cdb78070b4c55a"))), fmt.Sprintf("%x", kcv))
	})
}
