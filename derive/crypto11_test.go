package derive

import (
	"bytes"
	"context"
	"crypto/aes"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// TestCoexistsWithCrypto11 runs crypto11 and p11derive on one module in one
// process: crypto11 initialises it (it refuses a module someone else
// initialised), p11derive takes CKR_CRYPTOKI_ALREADY_INITIALIZED in its
// stride, derives from a key crypto11 made, and crypto11 still works after
// p11derive's Token is closed.
func TestCoexistsWithCrypto11(t *testing.T) {
	lt := lab.SoftHSM2(t) // a module copy of its own: not initialised yet
	lt.Setenv(t)
	c11, err := crypto11.Configure(&crypto11.Config{Path: lt.Module, TokenLabel: lt.Label, Pin: lt.PIN})
	require.NoError(t, err)
	defer c11.Close()

	attrs, err := crypto11.NewAttributeSetWithIDAndLabel([]byte("c11-base"), []byte("c11-base"))
	require.NoError(t, err)
	require.NoError(t, attrs.Set(crypto11.CkaDerive, true))
	c11Key, err := c11.GenerateSecretKeyWithAttributes(attrs, 128, crypto11.CipherAES)
	require.NoError(t, err)

	tok, err := Open(Config{Module: lt.Module, Label: lt.Label, PIN: lt.PIN})
	require.NoError(t, err, "p11derive must accept a module crypto11 initialised")
	ctx := context.Background()
	base, err := tok.FindKey(ctx, "c11-base")
	require.NoError(t, err)
	data := lab.Random(t, 16)
	res, err := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	require.NoError(t, err)

	// Cross-check without knowing K: crypto11 computes E_K(data) with a
	// C_Encrypt (CBC from a zero IV over one block) — which hands DK to the
	// host, exactly what p11derive exists to avoid, and fine for a test key.
	ek := make([]byte, 16)
	enc, err := c11Key.NewCBCEncrypterCloser(make([]byte, 16))
	require.NoError(t, err)
	enc.CryptBlocks(ek, data)
	enc.Close() // returns crypto11's session to its pool
	kcv, err := tok.CheckValue(ctx, res.Key)
	require.NoError(t, err)
	assert.Equal(t, refKCV(t, KeyAES128, ek), kcv)
	require.NoError(t, tok.Close())

	// crypto11 still works: its module was not finalised.
	out := make([]byte, aes.BlockSize)
	enc, err = c11Key.NewCBCEncrypterCloser(make([]byte, 16))
	require.NoError(t, err)
	enc.CryptBlocks(out, data)
	enc.Close()
	assert.True(t, bytes.Equal(out, ek))
	_, err = c11.FindKey(nil, []byte("c11-base"))
	assert.NoError(t, err)
}
