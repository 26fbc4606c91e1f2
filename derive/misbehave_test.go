package derive

import (
	"context"
	"crypto/aes"
	"encoding/hex"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
)

// misbehaving is each lab token (SoftHSM2, NSS softoken) seen through a
// forwarder configured with cfg.
func misbehaving(t *testing.T, cfg fwd.Config, f func(t *testing.T, lt *labToken)) {
	t.Run("softhsm2", func(t *testing.T) {
		lt, _ := softHSM2Wrapped(t, cfg)
		f(t, lt)
	})
	t.Run("nss", func(t *testing.T) {
		lt, _ := wrapped(t, cfg)
		f(t, lt)
	})
}

// weakCases are the strategies that make a key, each on the tokens that
// run it (stream-unwrap through the forwarder's emulation).
var weakCases = []struct {
	strategy Strategy
	f        Function
	tokens   map[string]bool // the lab tokens that run it
}{
	{Native, Encrypt{Cipher: AES, Mode: ECB}, map[string]bool{"softhsm2": true, "nss": true}},
	{Unwrap, Decrypt{Cipher: AES, Mode: ECB}, map[string]bool{"nss": true}},
	{MACUnwrap, Encrypt{Cipher: AES, Mode: ECB}, map[string]bool{"nss": true}},
	{CMACUnwrap, Encrypt{Cipher: AES, Mode: ECB}, map[string]bool{"nss": true}},
	{StreamUnwrap, Encrypt{Cipher: AES, Mode: ECB}, map[string]bool{"softhsm2": true, "nss": true}},
}

// TestTightenIgnoredAttributes: a token that ignores CKA_SENSITIVE and
// CKA_EXTRACTABLE in every template makes a readable, extractable DK; each
// strategy's DK is tightened with C_SetAttributeValue, has the known
// answer, says CKA_ALWAYS_SENSITIVE/CKA_NEVER_EXTRACTABLE false and warns.
// With StrictAttributes it is refused, naming strategy and mechanism, and
// nothing is left behind.
func TestTightenIgnoredAttributes(t *testing.T) {
	key := unhex("2b7e151628aed2a6abf7158809cf4f3c")
	data := unhex("6bc1bee22e409f96e93d7e117393172a")
	b, err := aes.NewCipher(key)
	require.NoError(t, err)
	misbehaving(t, fwd.Config{WeakTemplates: true, EmulateStreamUnwrap: true}, func(t *testing.T, lt *labToken) {
		kind := map[string]string{"softhsm2+fwd": "softhsm2", "nss+fwd": "nss"}[lt.kind]
		ctx := context.Background()
		base := lt.importKey(t, pkcs11.CKK_AES, key)
		for _, c := range weakCases {
			if !c.tokens[kind] {
				continue
			}
			t.Run(string(c.strategy), func(t *testing.T) {
				want := make([]byte, 16)
				if _, ok := c.f.(Decrypt); ok {
					b.Decrypt(want, data)
				} else {
					b.Encrypt(want, data)
				}
				objects := lt.objects(t)
				r := Request{Function: c.f, Data: data, KeyType: KeyAES128, Strategy: c.strategy}
				res, err := lt.tok.Derive(ctx, base, r)
				require.NoError(t, err)
				assert.True(t, res.Key.Sensitive)
				assert.False(t, res.Key.Extractable)
				assert.False(t, res.Key.AlwaysSensitive)
				assert.False(t, res.Key.NeverExtractable)
				require.NotEmpty(t, res.Warnings)
				assert.Contains(t, res.Warnings[len(res.Warnings)-1], string(c.strategy)+": the token ignored CKA_SENSITIVE=true and CKA_EXTRACTABLE=false in the template of C_")
				kcv, err := lt.tok.CheckValue(ctx, res.Key)
				require.NoError(t, err)
				assert.Equal(t, hex.EncodeToString(refKCV(t, KeyAES128, want)), hex.EncodeToString(kcv))
				// Its value cannot be read.
				v, err := lt.tok.Attributes(ctx, res.Key, pkcs11.CKA_SENSITIVE)
				require.NoError(t, err)
				assert.Equal(t, []byte{1}, v[pkcs11.CKA_SENSITIVE])
				require.NoError(t, lt.tok.Destroy(ctx, res.Key))

				r.StrictAttributes = true
				_, err = lt.tok.Derive(ctx, base, r)
				var we *WeakKeyError
				require.ErrorAs(t, err, &we)
				assert.True(t, we.Strict)
				assert.Equal(t, c.strategy, we.Strategy)
				assert.NotEmpty(t, we.Mechanism)
				assert.Contains(t, err.Error(), string(c.strategy)+": C_")
				assert.Contains(t, err.Error(), "CKA_SENSITIVE is false, CKA_EXTRACTABLE is true")
				assert.Equal(t, objects, lt.objects(t), "nothing left behind")
			})
		}

		// Import and Generate tighten too; strict refuses.
		k, err := lt.tok.Import(ctx, KeySpec{Type: KeyAES128, Usage: UseEncrypt}, key)
		require.NoError(t, err)
		assert.True(t, k.Sensitive)
		assert.False(t, k.Extractable)
		require.Len(t, k.Warnings, 1)
		assert.Contains(t, k.Warnings[0], "in the template of C_CreateObject")
		require.NoError(t, lt.tok.Destroy(ctx, k))
		g, err := lt.tok.GenerateKey(ctx, "", KeyAES128, UseEncrypt, false)
		require.NoError(t, err)
		assert.True(t, g.Sensitive)
		assert.False(t, g.Extractable)
		assert.Contains(t, g.Warnings[0], "C_GenerateKey with CKM_AES_KEY_GEN")
		require.NoError(t, lt.tok.Destroy(ctx, g))
		objects := lt.objects(t)
		_, err = lt.tok.Generate(ctx, KeySpec{Type: KeyAES128, Usage: UseEncrypt, StrictAttributes: true})
		assert.ErrorIs(t, err, ErrWeakKey)
		_, err = lt.tok.Import(ctx, KeySpec{Type: KeyAES128, Usage: UseEncrypt, StrictAttributes: true}, key)
		assert.ErrorIs(t, err, ErrWeakKey)
		assert.Equal(t, objects, lt.objects(t))
	})
}

// TestTightenRefusedIsWeak: when the token will not tighten the key
// (C_SetAttributeValue fails), the key is refused with both reasons.
func TestTightenRefusedIsWeak(t *testing.T) {
	cfg := fwd.Config{WeakTemplates: true, Faults: []fwd.Fault{{Func: "C_SetAttributeValue", N: 1, From: true, CKR: pkcs11.CKR_ATTRIBUTE_READ_ONLY}}}
	misbehaving(t, cfg, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		base := lt.importKey(t, pkcs11.CKK_AES, randomBytes(t, 16))
		objects := lt.objects(t)
		_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: randomBytes(t, 16), KeyType: KeyAES128})
		var we *WeakKeyError
		require.ErrorAs(t, err, &we)
		assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_READ_ONLY))
		assert.Equal(t, "p11derive: native: C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA: token made a weaker key than requested (destroyed): "+
			"CKA_SENSITIVE is false, CKA_EXTRACTABLE is true; tightening it failed: native: tighten the new DK: C_SetAttributeValue: "+
			pkcs11.Error(pkcs11.CKR_ATTRIBUTE_READ_ONLY).Error(), err.Error())
		assert.Equal(t, objects, lt.objects(t))
	})
}

// TestLeftBehindIsReported: a weak key that cannot be destroyed either is
// reported as possibly left in the token.
func TestLeftBehindIsReported(t *testing.T) {
	lt, _ := softHSM2Wrapped(t, fwd.Config{WeakTemplates: true, Faults: []fwd.Fault{
		{Func: "C_SetAttributeValue", N: 1, From: true, CKR: pkcs11.CKR_ATTRIBUTE_READ_ONLY},
		{Func: "C_DestroyObject", N: 1, From: true, CKR: pkcs11.CKR_DEVICE_ERROR}}})
	ctx := context.Background()
	base := lt.importKey(t, pkcs11.CKK_AES, randomBytes(t, 16))
	_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: randomBytes(t, 16), KeyType: KeyAES128})
	var lb *LeftBehindError
	require.ErrorAs(t, err, &lb)
	assert.ErrorIs(t, err, ErrWeakKey)
	assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR))
	assert.Contains(t, err.Error(), "it may be left in the token")
	assert.NotContains(t, err.Error(), "(destroyed)")
}
