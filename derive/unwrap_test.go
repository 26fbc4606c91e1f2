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

// TestUnwrapKnownAnswers computes Decrypt with the unwrap strategy on the
// known-answer cases of Encrypt (the same keys, data and IVs) and checks DK
// against software decryption. A token that will not unwrap with the
// mechanism (SoftHSM2 lists CKM_AES_ECB without CKF_UNWRAP) must refuse
// cleanly, leaving nothing behind; NSS softoken unwraps with AES.
func TestUnwrapKnownAnswers(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		for _, c := range katCases() {
			f := Decrypt{Cipher: c.f.Cipher, Mode: c.f.Mode, IV: c.f.IV}
			t.Run(c.name, func(t *testing.T) {
				ctx := context.Background()
				base := lt.importKey(t, c.baseCKK, c.base)
				before := lt.objects(t)
				res, err := lt.tok.Derive(ctx, base, Request{Function: f, Data: c.data, KeyType: c.out, Strategy: Unwrap})
				if err != nil {
					if lt.kind == "nss" && f.Cipher == AES {
						t.Fatalf("NSS softoken unwraps with %s: %v", f.Name(), err)
					}
					assert.ErrorAs(t, err, new(*TokenError))
					assert.Equal(t, before, lt.objects(t), "a refusal leaves nothing behind")
					return
				}
				defer lt.tok.Destroy(ctx, res.Key)
				assert.Equal(t, Unwrap, res.Strategy)
				assert.Equal(t, f.Name(), res.Function.Name())
				assert.Equal(t, 1+readBack, res.Calls, "C_UnwrapKey, then C_GetAttributeValue to read DK back")
				assert.Equal(t, before+1, lt.objects(t))
				assert.True(t, res.Key.Sensitive)
				assert.False(t, res.Key.Extractable)

				want := refDecrypt(t, c.baseCKK, c.base, f, c.data)[:c.out.n]
				if c.out.ckk == pkcs11.CKK_GENERIC_SECRET {
					assertHMAC(t, lt, res.Key, want)
					return
				}
				kcv, err := lt.tok.CheckValue(ctx, res.Key)
				require.NoError(t, err)
				assert.Equal(t, hex.EncodeToString(refKCV(t, c.out, want)), hex.EncodeToString(kcv))
			})
		}
	})
}

// TestUnwrapNeedsAttribute: a base key without CKA_UNWRAP is refused before
// any call, naming the mechanism and the attribute.
func TestUnwrapNeedsAttribute(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false))
		calls := lt.tok.calls.Load()
		_, err := lt.tok.Derive(context.Background(), base,
			Request{Function: Decrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128, Strategy: Unwrap})
		assert.ErrorIs(t, err, ErrMissingAttribute)
		assert.Contains(t, err.Error(), "CKM_AES_ECB unwrap needs CKA_UNWRAP on the base key")
		assert.Equal(t, calls, lt.tok.calls.Load(), "no call")
	})
}

// TestUnwrapMechanism pins the mechanism unwrap computes each Decrypt with.
func TestUnwrapMechanism(t *testing.T) {
	for _, c := range []struct {
		f    Decrypt
		want uint
	}{
		{Decrypt{Cipher: AES, Mode: ECB}, pkcs11.CKM_AES_ECB}, {Decrypt{Cipher: AES, Mode: CBC}, pkcs11.CKM_AES_CBC},
		{Decrypt{Cipher: DES3, Mode: ECB}, pkcs11.CKM_DES3_ECB}, {Decrypt{Cipher: DES3, Mode: CBC}, pkcs11.CKM_DES3_CBC},
		{Decrypt{Cipher: DES, Mode: ECB}, pkcs11.CKM_DES_ECB}, {Decrypt{Cipher: DES, Mode: CBC}, pkcs11.CKM_DES_CBC},
	} {
		assert.Equal(t, c.want, unwrapMechanism(c.f), c.f.Name())
	}
}
