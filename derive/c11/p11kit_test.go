package c11

import (
	"context"
	"crypto/aes"
	"encoding/hex"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

// TestUnderProxy runs the Deriver through p11-kit-proxy.so (issue 11, item
// 4): crypto11 and p11derive each get a function list of their own there,
// with their own sessions, so keys cross between them by CKA_ID and label
// only. A key p11derive imports (a session object of one of its sessions)
// is found by crypto11; crypto11's key is found by the Deriver; DK comes
// back to crypto11 by its label and encrypts as E_DK does in software; a
// key crypto11 generates (a token object) serves as a base key too.
func TestUnderProxy(t *testing.T) {
	l := lab.SoftHSM2(t)
	pt := lab.Proxy(t, l)
	pt.Setenv(t)
	// Either order works behind the proxy: each list is initialised on its
	// own (C_Initialize answers CKR_OK to both), so crypto11 does not meet
	// CKR_CRYPTOKI_ALREADY_INITIALIZED.
	tok, err := derive.Open(derive.Config{Module: pt.Module, Label: pt.Label, PIN: pt.PIN})
	require.NoError(t, err)
	c, err := crypto11.Configure(&crypto11.Config{Path: pt.Module, TokenLabel: pt.Label, Pin: pt.PIN})
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, tok.Close())
		require.NoError(t, c.Close()) // finalises crypto11's list only
	})
	d := New(c, tok)
	ctx := context.Background()

	base := importKey(t, c, tok, pkcs11.CKK_AES, lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c"), "proxy-master")
	k, err := d.Key(ctx, base)
	require.NoError(t, err)
	assert.Equal(t, "proxy-master", k.Label)
	assert.Equal(t, []byte("proxy-master"), k.ID)

	dk, res, err := d.Derive(ctx, base, derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data: lab.Unhex("6bc1bee22e409f96e93d7e117393172a"), KeyType: derive.KeyAES128, Label: "proxy-dk"})
	require.NoError(t, err)
	assert.Equal(t, derive.Native, res.Strategy)
	kcv, err := tok.CheckValue(ctx, res.Key)
	require.NoError(t, err)
	assert.Equal(t, "6d60f8", hex.EncodeToString(kcv))
	// crypto11 encrypts with DK, through its own list, as E_DK does.
	ref, err := aes.NewCipher(lab.Unhex("3ad77bb40d7a3660a89ecaf32466ef97"))
	require.NoError(t, err)
	blk, err := Block(dk)
	require.NoError(t, err)
	got, want := make([]byte, 16), make([]byte, 16)
	blk.Encrypt(got, lab.Unhex("00112233445566778899aabbccddeeff"))
	ref.Encrypt(want, lab.Unhex("00112233445566778899aabbccddeeff"))
	assert.Equal(t, want, got)
	require.NoError(t, tok.Destroy(ctx, res.Key))

	// A token key crypto11 generated: found by CKA_ID and label, derived
	// from, and the DK matches p11derive's own derivation from it.
	attrs, err := crypto11.NewAttributeSetWithIDAndLabel([]byte("proxy-gen"), []byte("proxy-gen"))
	require.NoError(t, err)
	require.NoError(t, attrs.Set(crypto11.CkaDerive, true))
	gen, err := c.GenerateSecretKeyWithAttributes(attrs, 256, crypto11.CipherAES)
	require.NoError(t, err)
	t.Cleanup(func() { gen.Delete() })
	r := derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.CBC, IV: make([]byte, 16)}, Data: make([]byte, 32), KeyType: derive.KeyAES256}
	dk2, _, err := d.Derive(ctx, gen, r)
	require.NoError(t, err)
	gk, err := d.Key(ctx, gen)
	require.NoError(t, err)
	assert.True(t, gk.Token)
	direct, err := tok.Derive(ctx, gk, r)
	require.NoError(t, err)
	wantKCV, err := tok.CheckValue(ctx, direct.Key)
	require.NoError(t, err)
	blk2, err := Block(dk2)
	require.NoError(t, err)
	got = make([]byte, 16)
	blk2.Encrypt(got, make([]byte, 16))
	assert.Equal(t, wantKCV, got[:3])
}
