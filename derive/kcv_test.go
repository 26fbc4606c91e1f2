package derive

import (
	"context"
	"encoding/hex"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// TestCheckValueBy: the ecb and cmac check values of an AES key and a
// Triple DES key, computed in every lab token — with the key when it has
// the usage, with a session copy when it has not (the key's attributes
// unchanged, the copy gone) — or read from CKA_CHECK_VALUE where the
// token has it; each against the software value.
func TestCheckValueBy(t *testing.T) {
	ctx := context.Background()
	aesKey := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	// SP 800-38B D.1: L = AES(K)[0^128] = 7df76b0c… for this key.
	wantECB := map[uint]string{pkcs11.CKK_AES: "7df76b", pkcs11.CKK_DES2: ""}
	wantCMAC := map[uint]string{pkcs11.CKK_AES: hex.EncodeToString(cmac(t, aesKey, make([]byte, 16))[:3])}
	require.NotEqual(t, wantECB[pkcs11.CKK_AES], wantCMAC[pkcs11.CKK_AES])
	forEachToken(t, func(t *testing.T, lt *labToken) {
		for _, c := range []struct {
			name   string
			usage  []*pkcs11.Attribute
			source map[KCVMethod]string
		}{
			{"with the usage", nil, map[KCVMethod]string{KCVECB: KCVComputed, KCVCMAC: KCVComputed}},
			{"without it", []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false), pkcs11.NewAttribute(pkcs11.CKA_SIGN, false)},
				map[KCVMethod]string{KCVECB: KCVSessionCopy, KCVCMAC: KCVSessionCopy}},
		} {
			t.Run(c.name, func(t *testing.T) {
				k := lt.importKey(t, pkcs11.CKK_AES, aesKey, c.usage...)
				before := lt.objects(t)
				for m, want := range map[KCVMethod]string{KCVECB: wantECB[pkcs11.CKK_AES], KCVCMAC: wantCMAC[pkcs11.CKK_AES]} {
					kcv, err := lt.tok.CheckValueBy(ctx, k, m)
					require.NoError(t, err, "%s", m)
					assert.Equal(t, want, hex.EncodeToString(kcv.Value), "%s", m)
					assert.Equal(t, m, kcv.Method)
					assert.Equal(t, c.source[m], kcv.Source, "%s", m)
					t.Logf("%s: %s %s: %s, %d calls", lt.kind, c.name, m, kcv.Source, kcv.Calls)
					assert.Equal(t, before, lt.objects(t), "no copy left behind")
				}
				again, err := lt.tok.Key(ctx, k.Handle)
				require.NoError(t, err)
				assert.Equal(t, k.Encrypt, again.Encrypt, "the key's usages are unchanged")
				assert.Equal(t, k.Sign, again.Sign)
			})
		}
		t.Run("des2", func(t *testing.T) {
			v := lab.Unhex("0123456789abcdeffedcba9876543210")
			k := lt.importKey(t, pkcs11.CKK_DES2, v, pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false))
			kcv, err := lt.tok.CheckValueBy(ctx, k, KCVECB)
			require.NoError(t, err)
			// The pyemv IMK's check value (tests/test_kd_hsm.py: 08D7).
			assert.Equal(t, "08d7b4", hex.EncodeToString(kcv.Value))
		})
		t.Run("refusals", func(t *testing.T) {
			k := lt.importKey(t, pkcs11.CKK_AES, aesKey)
			_, err := lt.tok.CheckValueBy(ctx, k, KCVMethod("sha1"))
			assert.ErrorIs(t, err, ErrInvalidInput)
			g := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, aesKey)
			_, err = lt.tok.CheckValueBy(ctx, g, KCVECB)
			assert.ErrorIs(t, err, ErrKeyType)
		})
	})
}
