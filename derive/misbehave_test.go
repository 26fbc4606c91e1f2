package derive

import (
	"context"
	"crypto/aes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
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
	key := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172a")
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
		g, err := lt.tok.Generate(ctx, KeySpec{Type: KeyAES128, Usage: UseEncrypt})
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
		base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
		objects := lt.objects(t)
		_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
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
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
	_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
	var lb *LeftBehindError
	require.ErrorAs(t, err, &lb)
	assert.ErrorIs(t, err, ErrWeakKey)
	assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR))
	assert.Contains(t, err.Error(), "it may be left in the token")
	assert.NotContains(t, err.Error(), "(destroyed)")
}

// TestListedNeedsTheFlag: a token that lists CKM_AES_ECB (and CKM_AES_CTR)
// without CKF_UNWRAP: Plan says the unwrap strategies are not listed, the
// substitutes offered leave aes-ecb-decrypt out, and C_GetMechanismInfo is
// read once per mechanism.
func TestListedNeedsTheFlag(t *testing.T) {
	lt, w := wrapped(t, fwd.Config{Hide: append(append([]string{}, encryptData...), macs...),
		NoFlag: []string{"CKM_AES_ECB:CKF_UNWRAP", "CKM_AES_CTR:CKF_UNWRAP", "0x2104:CKF_UNWRAP", "0x2107:CKF_UNWRAP"}})
	ctx := context.Background()
	key := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	base := lt.importKey(t, pkcs11.CKK_AES, key)
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172a")

	plans, err := lt.tok.Plan(base, Request{Function: Decrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	require.NoError(t, err)
	require.Len(t, plans, 1)
	assert.Equal(t, []bool{false}, plans[0].Listed)
	assert.Equal(t, []uint{pkcs11.CKF_UNWRAP}, plans[0].Flags)
	require.Error(t, plans[0].Problem)
	assert.Equal(t, "the token lists CKM_AES_ECB without CKF_UNWRAP", plans[0].Problem.Error())
	assert.ErrorIs(t, plans[0].Problem, ErrUnsupported)

	plans, err = lt.tok.Plan(base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	require.NoError(t, err)
	for _, p := range plans {
		assert.Contains(t, p.Listed, false, p.Strategy)
	}
	infoCalls := fwd.Calls(t, w, "C_GetMechanismInfo")
	_, err = lt.tok.Plan(base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	require.NoError(t, err)
	assert.Equal(t, infoCalls, fwd.Calls(t, w, "C_GetMechanismInfo"), "the flags are cached")

	_, err = lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	var ue *UnsupportedError
	require.ErrorAs(t, err, &ue)
	assert.NotContains(t, ue.Substitutes, "aes-ecb-decrypt")
	assert.Contains(t, ue.Substitutes, "aes-cbc-decrypt", "CKM_AES_CBC keeps CKF_UNWRAP")
	assert.Contains(t, ue.Substitutes, "sp800-108-counter")

	// Not listed (with the flag) but tried, as for an unlisted mechanism:
	// this token runs it all the same, and the result says so.
	res, err := lt.tok.Derive(ctx, base, Request{Function: Decrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	require.NoError(t, err)
	assert.Contains(t, res.Warnings, "the token lists CKM_AES_ECB without CKF_UNWRAP, but ran it")
	require.NoError(t, lt.tok.Destroy(ctx, res.Key))
}

// TestErrorsRankMechanismFirst: on a token without CKM_AES_ECB_ENCRYPT_DATA,
// a base key without CKA_DERIVE hears about the mechanism first, and about
// the attributes in one phrase.
func TestErrorsRankMechanismFirst(t *testing.T) {
	lt, _ := wrapped(t, fwd.Config{Hide: encryptData})
	ctx := context.Background()
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false), pkcs11.NewAttribute(pkcs11.CKA_SIGN, false), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false))
	calls := lt.tok.calls.Load()
	_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrMissingAttribute)
	assert.Equal(t, calls, lt.tok.calls.Load(), "refused before any call")
	msg := err.Error()
	assert.Contains(t, msg, "native: the token does not list CKM_AES_ECB_ENCRYPT_DATA; and CKM_AES_ECB_ENCRYPT_DATA needs CKA_DERIVE on the base key")
	assert.Contains(t, msg, "needs CKA_SIGN and CKA_UNWRAP on the base key")
	assert.Less(t, strings.Index(msg, "does not list"), strings.Index(msg, "CKA_SIGN"))
	t.Log(msg)
}

// TestGenerateLeavesNothing: a persistent base key whose read-back fails
// is destroyed, the error says "base key" (never "DK"), and a destruction
// that fails too is reported in the same error.
func TestGenerateLeavesNothing(t *testing.T) {
	lt, w := softHSM2Wrapped(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_GetAttributeValue", N: 1, From: true, CKR: pkcs11.CKR_DEVICE_ERROR}}})
	ctx := context.Background()
	objects := lt.objects(t)
	_, err := lt.tok.Generate(ctx, KeySpec{Label: "gen-fails", Type: KeyAES128, Usage: UseDerive, Persistent: true})
	require.Error(t, err)
	assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR))
	assert.Contains(t, err.Error(), "read the new base key's attributes")
	assert.NotContains(t, err.Error(), "DK")
	assert.Equal(t, objects, lt.objects(t), "the new persistent key was destroyed")
	assert.Equal(t, 1, fwd.Calls(t, w, "C_DestroyObject"))

	fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{
		{Func: "C_GetAttributeValue", N: 1, From: true, CKR: pkcs11.CKR_DEVICE_ERROR},
		{Func: "C_DestroyObject", N: 1, From: true, CKR: pkcs11.CKR_DEVICE_ERROR}}})
	_, err = lt.tok.Generate(ctx, KeySpec{Label: "gen-fails-twice", Type: KeyAES128, Usage: UseDerive, Persistent: true})
	var lb *LeftBehindError
	require.ErrorAs(t, err, &lb)
	assert.Contains(t, err.Error(), "read the new base key's attributes")
	assert.Contains(t, err.Error(), "destroying the new key")
	assert.Contains(t, err.Error(), "may be left in the token")
	fwd.Configure(t, w, fwd.Config{})
	k, err := lt.tok.FindKey(ctx, "gen-fails-twice")
	require.NoError(t, err, "the key the token would not destroy is there, as the error said")
	require.NoError(t, lt.tok.Destroy(ctx, k))
}

// TestNoValueLen: a token that gives no CKA_VALUE_LEN: DES keys get their
// length from their type, AES base keys are not refused for the length
// p11derive cannot see (the token decides), and DK is read back without it.
func TestNoValueLen(t *testing.T) {
	key := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	des3 := lab.Unhex("0123456789abcdef23456789abcdef01456789abcdef0123")
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172a")
	misbehaving(t, fwd.Config{NoValueLen: true}, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		base := lt.importKey(t, pkcs11.CKK_AES, key)
		assert.Equal(t, 0, base.Len, "the token gives no length")
		d3 := lt.importKey(t, pkcs11.CKK_DES3, des3)
		assert.Equal(t, 24, d3.Len, "from the key type")
		res, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
		require.NoError(t, err)
		defer lt.tok.Destroy(ctx, res.Key)
		assert.Equal(t, 0, res.Key.Len)
		kcv, err := lt.tok.CheckValue(ctx, res.Key)
		require.NoError(t, err)
		assert.Equal(t, refKCV(t, KeyAES128, refEncrypt(t, pkcs11.CKK_AES, key, Encrypt{Cipher: AES, Mode: ECB}, data)), kcv)

		// Messages name key types by CKK name.
		_, err = lt.tok.Derive(ctx, d3, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
		require.ErrorIs(t, err, ErrKeyType)
		assert.Contains(t, err.Error(), "the base key has type CKK_DES3")
		assert.NotContains(t, err.Error(), "0x")
	})
}
