package batch

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/kwref"
	"github.com/p11derive/p11derive/internal/lab"
)

// Software references for the tests: the block ciphers, check values and
// the key-wrap algorithms, anchored to the RFCs' published answers.

// refBlock is AES for 16/24/32-byte keys of kind "aes", 3DES for "des3"
// (16-byte keys are two-key 3DES).
func refBlock(t testing.TB, kind string, key []byte) cipher.Block {
	t.Helper()
	var b cipher.Block
	var err error
	switch kind {
	case "aes":
		b, err = aes.NewCipher(key)
	case "des3":
		if len(key) == 16 {
			key = append(append([]byte{}, key...), key[:8]...)
		}
		b, err = des.NewTripleDESCipher(key)
	}
	require.NoError(t, err)
	return b
}

func refECB(t testing.TB, kind string, key, data []byte) []byte {
	b := refBlock(t, kind, key)
	out := make([]byte, len(data))
	for i := 0; i < len(data); i += b.BlockSize() {
		b.Encrypt(out[i:], data[i:i+b.BlockSize()])
	}
	return out
}

func refCBC(t testing.TB, kind string, key, iv, data []byte) []byte {
	out := make([]byte, len(data))
	cipher.NewCBCEncrypter(refBlock(t, kind, key), iv).CryptBlocks(out, data)
	return out
}

func refKCV(t testing.TB, kind string, key []byte) []byte {
	b := refBlock(t, kind, key)
	return refECB(t, kind, key, make([]byte, b.BlockSize()))[:3]
}

// kw, kwp and kwPKCS7 are the key-wrap references of package kwref.
func kw(t testing.TB, kek []byte, iv uint64, p []byte) []byte {
	b, err := kwref.Wrap(kek, iv, p)
	require.NoError(t, err)
	return b
}

const kwIV = kwref.IV

func kwp(t testing.TB, kek, p []byte) []byte {
	b, err := kwref.WrapPad(kek, p)
	require.NoError(t, err)
	return b
}

func kwPKCS7(t testing.TB, kek, p []byte) []byte {
	b, err := kwref.WrapPKCS7(kek, p)
	require.NoError(t, err)
	return b
}

func TestReferenceAnchors(t *testing.T) {
	// SP 800-67 Rev. 2 appendix B, first block (TDEA ECB, three keys).
	assert.Equal(t, "a826fd8ce53b855f", hex.EncodeToString(refECB(t, "des3",
		lab.Unhex("0123456789abcdef23456789abcdef01456789abcdef0123"), lab.Unhex("5468652071756663"))))
	// SP 800-38A F.1.1 and F.2.1, AES-128.
	assert.Equal(t, "3ad77bb40d7a3660a89ecaf32466ef97", hex.EncodeToString(refECB(t, "aes", kValue, lab.Unhex("6bc1bee22e409f96e93d7e117393172a"))))
	assert.Equal(t, "7649abac8119b246cee98e9b12e9197d", hex.EncodeToString(refCBC(t, "aes", kValue, lab.Unhex("000102030405060708090a0b0c0d0e0f"), lab.Unhex("6bc1bee22e409f96e93d7e117393172a"))))
}
