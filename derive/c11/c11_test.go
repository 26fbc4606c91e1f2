package c11

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

// The examples (example_test.go) read their token, made by MainExamples,
// from the environment; crypto11 initialises its module itself.
func TestMain(m *testing.M) { os.Exit(lab.MainExamples(m, lab.InitByExamples)) }

// setup configures crypto11 first on a fresh SoftHSM2 token (crypto11
// refuses a module someone else initialised; it cannot pass NSS softoken's
// init arguments), then opens a p11derive Token on it.
func setup(t *testing.T) (*crypto11.Context, *derive.Token, *Deriver) {
	lt := lab.SoftHSM2(t)
	lt.Setenv(t)
	c, err := crypto11.Configure(&crypto11.Config{Path: lt.Module, TokenLabel: lt.Label, Pin: lt.PIN})
	require.NoError(t, err)
	tok, err := derive.Open(derive.Config{Module: lt.Module, Label: lt.Label, PIN: lt.PIN})
	require.NoError(t, err)
	// The Token first: crypto11's Close finalises the module.
	t.Cleanup(func() {
		require.NoError(t, tok.Close())
		require.NoError(t, c.Close())
	})
	return c, tok, New(c, tok)
}

// importKey creates a session key of known value with CKA_ID and CKA_LABEL
// (crypto11 cannot import a key value) and returns crypto11's handle on it.
func importKey(t *testing.T, c *crypto11.Context, tok *derive.Token, ckk uint, value []byte, name string) *crypto11.SecretKey {
	kt, err := derive.ParseKeyType(derive.KeyTypeName(ckk), len(value))
	require.NoError(t, err)
	_, err = tok.Import(context.Background(), derive.KeySpec{Label: name, ID: []byte(name), Type: kt, Usage: derive.UseDerive | derive.UseEncrypt}, value)
	require.NoError(t, err)
	k, err := c.FindKey([]byte(name), []byte(name))
	require.NoError(t, err)
	return k
}

// TestDeriveEncrypts derives an AES key from a crypto11 key of known value
// (SP 800-38A's), and encrypts with the crypto11 key it gets back — as a
// cipher.Block, in CBC mode and with AES-GCM — checking every result
// against Go's crypto/aes keyed with the expected DK.
func TestDeriveEncrypts(t *testing.T) {
	c, tok, d := setup(t)
	ctx := context.Background()
	base := importKey(t, c, tok, pkcs11.CKK_AES, lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c"), "master")
	// DK = AES-ECB(K, F.1.1's first block) = 3ad77bb4...
	dkValue := lab.Unhex("3ad77bb40d7a3660a89ecaf32466ef97")
	ref, _ := aes.NewCipher(dkValue)

	dk, res, err := d.Derive(ctx, base, derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data: lab.Unhex("6bc1bee22e409f96e93d7e117393172a"), KeyType: derive.KeyAES128})
	require.NoError(t, err)
	assert.Equal(t, derive.Native, res.Strategy)
	assert.True(t, res.Key.Sensitive && !res.Key.Extractable, "DK stays in the token")
	assert.Equal(t, crypto11.CipherAES, dk.Cipher)
	kcv, err := tok.CheckValue(ctx, res.Key)
	require.NoError(t, err)
	assert.Equal(t, "6d60f8", hex.EncodeToString(kcv))

	// As a cipher.Block: E_DK(0), whose first bytes are the check value.
	blk, err := Block(dk)
	require.NoError(t, err)
	got, want := make([]byte, 16), make([]byte, 16)
	blk.Encrypt(got, make([]byte, 16))
	ref.Encrypt(want, make([]byte, 16))
	assert.Equal(t, want, got)
	assert.Equal(t, kcv, got[:3])
	back := make([]byte, 16)
	blk.Decrypt(back, got)
	assert.Equal(t, make([]byte, 16), back)
	// ... and through the cipher package: CTR over 40 bytes.
	iv := make([]byte, 16)
	rand.Read(iv)
	msg := []byte("forty bytes of plaintext for the CTR te")
	ctr, refCTR := make([]byte, len(msg)), make([]byte, len(msg))
	cipher.NewCTR(blk, iv).XORKeyStream(ctr, msg)
	cipher.NewCTR(ref, iv).XORKeyStream(refCTR, msg)
	assert.Equal(t, refCTR, ctr)

	// crypto11's CBC mode (closed: crypto11's Close waits for its sessions).
	pt := bytes.Repeat([]byte("0123456789abcdef"), 4)
	enc, err := dk.NewCBCEncrypterCloser(iv)
	require.NoError(t, err)
	ct := make([]byte, len(pt))
	enc.CryptBlocks(ct, pt)
	enc.Close()
	refCT := make([]byte, len(pt))
	cipher.NewCBCEncrypter(ref, iv).CryptBlocks(refCT, pt)
	assert.Equal(t, refCT, ct)

	// crypto11's AES-GCM, opened by Go's with the expected DK, and back.
	aead, err := dk.NewGCM()
	require.NoError(t, err)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	sealed := aead.Seal(nil, nonce, pt, []byte("header"))
	refGCM, err := cipher.NewGCMWithNonceSize(ref, aead.NonceSize()) // crypto11 defaults to 16-byte nonces
	require.NoError(t, err)
	opened, err := refGCM.Open(nil, nonce, sealed, []byte("header"))
	require.NoError(t, err, "Go's AES-GCM under the expected DK opens what the token sealed")
	assert.Equal(t, pt, opened)
	opened, err = aead.Open(nil, nonce, refGCM.Seal(nil, nonce, pt, nil), nil)
	require.NoError(t, err)
	assert.Equal(t, pt, opened)

	// The Deriver finds the base key p11derive's way too.
	k, err := d.Key(ctx, base)
	require.NoError(t, err)
	assert.Equal(t, "master", k.Label)
}

// TestDeriveDES3 derives a three-key 3DES key from a key crypto11
// generated (value unknown): it matches a derivation of p11derive's own by
// check value, and encrypts in crypto11's CBC mode as E_DK does.
func TestDeriveDES3(t *testing.T) {
	c, tok, d := setup(t)
	ctx := context.Background()
	attrs, err := crypto11.NewAttributeSetWithIDAndLabel([]byte("gen"), []byte("gen"))
	require.NoError(t, err)
	require.NoError(t, attrs.Set(crypto11.CkaDerive, true))
	base, err := c.GenerateSecretKeyWithAttributes(attrs, 0, crypto11.CipherDES3) // 0: no CKA_VALUE_LEN, which DES3 keys lack
	require.NoError(t, err)
	data := make([]byte, 24)
	rand.Read(data)
	r := derive.Request{Function: derive.Encrypt{Cipher: derive.DES3, Mode: derive.ECB}, Data: data, KeyType: derive.KeyDES3, Label: "dk-des3"}
	dk, res, err := d.Derive(ctx, base, r)
	require.NoError(t, err)
	assert.Equal(t, crypto11.CipherDES3, dk.Cipher)
	assert.Equal(t, "dk-des3", res.Key.Label)

	k, err := d.Key(ctx, base)
	require.NoError(t, err)
	r.Label = ""
	direct, err := tok.Derive(ctx, k, r)
	require.NoError(t, err)
	want, err := tok.CheckValue(ctx, direct.Key)
	require.NoError(t, err)
	blk, err := Block(dk)
	require.NoError(t, err)
	got := make([]byte, 8)
	blk.Encrypt(got, make([]byte, 8))
	assert.Equal(t, want, got[:3])

	// The same label twice would leave crypto11 unable to tell the keys apart.
	r.Label = "dk-des3"
	_, _, err = d.Derive(ctx, base, r)
	require.ErrorIs(t, err, derive.ErrInvalidInput)
	assert.ErrorContains(t, err, "exists already")
}

func TestDeriveRefusesWhatCrypto11CannotUse(t *testing.T) {
	c, tok, d := setup(t)
	base := importKey(t, c, tok, pkcs11.CKK_DES3, lab.Unhex("0123456789abcdef23456789abcdef01456789abcdef0123"), "des3")
	before := countKeys(t, tok)
	_, _, err := d.Derive(context.Background(), base, derive.Request{Function: derive.Encrypt{Cipher: derive.DES3, Mode: derive.ECB},
		Data: make([]byte, 16), KeyType: derive.KeyDES2})
	require.ErrorIs(t, err, derive.ErrInvalidInput)
	assert.ErrorContains(t, err, "crypto11 has no cipher for DES2 keys")
	assert.Equal(t, before, countKeys(t, tok), "nothing made")
}

// countKeys counts the secret keys the Token's sessions see.
func countKeys(t *testing.T, tok *derive.Token) int {
	labels, err := tok.Labels(context.Background())
	require.NoError(t, err)
	return len(labels)
}
