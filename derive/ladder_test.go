package derive

import (
	"context"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// wrapped is NSS softoken's crypto slot seen through a forwarding module
// configured with cfg: the token plays one without some mechanisms, or a
// failing one.
func wrapped(t *testing.T, cfg fwd.Config) (*labToken, *lab.Token) {
	t.Helper()
	tokens(t) // NSS initialised directly first
	w := fwd.Wrap(t, lab.NSS(t), cfg)
	tok, err := Open(Config{Module: w.Module, InitArgs: w.InitArgs, Slot: &w.SlotID})
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return &labToken{kind: "nss+fwd", lab: w, tok: tok}, w
}

var encryptData = []string{
	"CKM_AES_ECB_ENCRYPT_DATA", "CKM_AES_CBC_ENCRYPT_DATA", "CKM_DES3_ECB_ENCRYPT_DATA",
	"CKM_DES3_CBC_ENCRYPT_DATA", "CKM_DES_ECB_ENCRYPT_DATA", "CKM_DES_CBC_ENCRYPT_DATA",
}

var macs = []string{"CKM_AES_MAC_GENERAL", "CKM_AES_CMAC", "CKM_DES3_MAC_GENERAL", "0x138" /* CKM_DES3_CMAC */, "CKM_DES_MAC_GENERAL",
	"CKM_AES_MAC", "CKM_DES3_MAC", "CKM_AES_CMAC_GENERAL", "0x137" /* CKM_DES3_CMAC_GENERAL */}

// TestLadderPicksMACUnwrap hides the *_ENCRYPT_DATA mechanisms: Auto picks
// MAC-unwrap on its own and the keys are unchanged.
func TestLadderPicksMACUnwrap(t *testing.T) {
	lt, _ := wrapped(t, fwd.Config{Hide: encryptData})
	ctx := context.Background()
	for _, c := range katCases() {
		t.Run(c.name, func(t *testing.T) {
			base := lt.importKey(t, c.baseCKK, c.base)
			res, err := lt.tok.Derive(ctx, base, Request{Function: c.f, Data: c.data, KeyType: c.out})
			require.NoError(t, err)
			defer lt.tok.Destroy(ctx, res.Key)
			assert.Equal(t, MACUnwrap, res.Strategy, "the cheapest exact strategy left")
			ref := refEncrypt(t, c.baseCKK, c.base, c.f, c.data)[:c.out.n]
			assertKeyValue(t, lt, res.Key, c.out, ref)
		})
	}
}

// TestLadderNoExactStrategy hides the MACs too: an exact request fails and
// says what is missing and what the token could do instead; a request that
// allows a substitute gets it, and says so.
func TestLadderNoExactStrategy(t *testing.T) {
	lt, _ := wrapped(t, fwd.Config{Hide: append(append([]string{}, encryptData...), macs...)})
	ctx := context.Background()
	key := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	base := lt.importKey(t, pkcs11.CKK_AES, key)
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172a")
	objects := lt.objects(t)

	_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrUnsupported)
	var ue *UnsupportedError
	require.ErrorAs(t, err, &ue)
	assert.Contains(t, err.Error(), "CKM_AES_ECB_ENCRYPT_DATA")
	assert.Contains(t, err.Error(), "CKM_AES_MAC_GENERAL")
	assert.Contains(t, ue.Substitutes, "aes-ecb-decrypt")
	assert.Contains(t, ue.Substitutes, "sp800-108-counter")
	assert.Equal(t, objects, lt.objects(t))

	// Allowing SP 800-108 (with the AES-CMAC PRF): it runs, and says so.
	kdf := SP800108{Mode: SP800108Counter, PRF: AESCMAC}
	res, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128,
		Allow: []Function{kdf}})
	require.NoError(t, err)
	assert.Equal(t, "sp800-108-counter", res.Function.Name())
	assert.Equal(t, Native, res.Strategy)
	kcv, err := lt.tok.CheckValue(ctx, res.Key)
	require.NoError(t, err)
	assert.Equal(t, refKCV(t, KeyAES128, refSP800108(t, kdf, key, data, 16)), kcv)
	require.NoError(t, lt.tok.Destroy(ctx, res.Key))

	// Allowing the inverse function: it runs, and the result says so.
	res, err = lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128,
		Allow: []Function{Decrypt{Cipher: AES, Mode: ECB}}})
	require.NoError(t, err)
	defer lt.tok.Destroy(ctx, res.Key)
	assert.Equal(t, "aes-ecb-decrypt", res.Function.Name())
	assert.Equal(t, Unwrap, res.Strategy)
	assert.Contains(t, fmt.Sprint(res.Warnings), "substitute")
	p := res.Profile()
	assert.Equal(t, "aes-ecb-decrypt", p.KDF)
	want := make([]byte, 16)
	blk := refBlock(t, pkcs11.CKK_AES, key)
	blk.Decrypt(want, data)
	kcv, err = lt.tok.CheckValue(ctx, res.Key)
	require.NoError(t, err)
	assert.Equal(t, refKCV(t, KeyAES128, want), kcv)

	// The profile derives the same key again, and only with its function.
	r, err := p.Request(data)
	require.NoError(t, err)
	again, err := lt.tok.Derive(ctx, base, r)
	require.NoError(t, err)
	defer lt.tok.Destroy(ctx, again.Key)
	kcv2, err := lt.tok.CheckValue(ctx, again.Key)
	require.NoError(t, err)
	assert.Equal(t, kcv, kcv2)
}

// TestSoftHSM2WithoutEncryptData hides ENCRYPT_DATA with SoftHSM2's own
// slots.mechanisms setting: SoftHSM2 cannot unwrap with ECB either, so an
// exact request fails with a clear error and leaves nothing behind.
func TestSoftHSM2WithoutEncryptData(t *testing.T) {
	l := lab.SoftHSM2(t, lab.HideMechanisms(encryptData...))
	l.Setenv(t)
	tok, err := Open(Config{Module: l.Module, Slot: &l.SlotID, PIN: l.PIN})
	require.NoError(t, err)
	defer tok.Close()
	lt := &labToken{kind: "softhsm2-hidden", lab: l, tok: tok}
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
	objects := lt.objects(t)
	_, err = tok.Derive(context.Background(), base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrUnsupported)
	assert.Contains(t, err.Error(), "does not list CKM_AES_ECB_ENCRYPT_DATA")
	assert.Equal(t, objects, lt.objects(t))
	t.Log(err)
}
