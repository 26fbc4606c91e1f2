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

// macUnwrapTokens are the lab tokens where the encrypt-as-decrypt strategies
// run: NSS softoken (AES and DES3 ECB unwrap, MAC_GENERAL and CMAC).
func macUnwrapTokens(t *testing.T) []*labToken {
	var out []*labToken
	for _, lt := range tokens(t) {
		if lt.kind != "softhsm2" {
			out = append(out, lt)
		}
	}
	return out
}

// TestMACUnwrapKnownAnswers runs the known-answer cases of the native
// strategy through MAC-unwrap and CMAC-unwrap: same keys, bit for bit.
func TestMACUnwrapKnownAnswers(t *testing.T) {
	for _, lt := range macUnwrapTokens(t) {
		for _, st := range []Strategy{MACUnwrap, CMACUnwrap} {
			t.Run(lt.kind+"/"+string(st), func(t *testing.T) {
				for _, c := range katCases() {
					if !strategyByName(st).computes(c.f) {
						continue // no single-DES CMAC in PKCS#11
					}
					t.Run(c.name, func(t *testing.T) {
						ctx := context.Background()
						base := lt.importKey(t, c.baseCKK, c.base)
						before := lt.objects(t)
						res, err := lt.tok.Derive(ctx, base, Request{Function: c.f, Data: c.data, KeyType: c.out, Strategy: st})
						if mechs, _ := strategyByName(st).needs(c.f); !lt.tok.Lists(mechs[0]) {
							// NSS softoken 3.87 has no CKM_DES3_CMAC: a clean refusal.
							assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID))
							assert.Equal(t, before, lt.objects(t))
							return
						}
						require.NoError(t, err)
						defer lt.tok.Destroy(ctx, res.Key)
						assert.Equal(t, st, res.Strategy)
						assert.Equal(t, before+1, lt.objects(t), "intermediate objects left behind")
						k := blocksFor(c.f.Cipher, c.out)
						want := twoStep*k + 1 + readBack
						if st == CMACUnwrap {
							want += twoStep
						}
						assert.Equal(t, want, res.Calls)
						assert.True(t, res.Key.Sensitive)
						assert.False(t, res.Key.Extractable)
						ref := refEncrypt(t, c.baseCKK, c.base, c.f, c.data)[:c.out.n]
						assertKeyValue(t, lt, res.Key, c.out, ref)
					})
				}
			})
		}
	}
}

// TestCrossStrategy derives from keys generated inside the token (value
// unknown to anyone) with every exact strategy and compares check values.
func TestCrossStrategy(t *testing.T) {
	for _, lt := range macUnwrapTokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			ctx := context.Background()
			for _, c := range []struct {
				base KeyType
				f    Encrypt
				data int
				out  KeyType
			}{
				{KeyAES256, Encrypt{Cipher: AES, Mode: CBC, IV: lab.Random(t, 16)}, 48, KeyAES256},
				{KeyAES128, Encrypt{Cipher: AES, Mode: ECB}, 32, KeyAES128},
				{KeyDES3, Encrypt{Cipher: DES3, Mode: CBC, IV: lab.Random(t, 8)}, 24, KeyDES3},
				{KeyDES2, Encrypt{Cipher: DES3, Mode: ECB}, 16, KeyDES2},
			} {
				base, err := lt.tok.Generate(ctx, KeySpec{Type: c.base, Usage: UseDerive | UseSign | UseUnwrap | UseEncrypt})
				require.NoError(t, err)
				data := lab.Random(t, c.data)
				var kcvs []string
				for _, st := range []Strategy{Native, MACUnwrap, CMACUnwrap} {
					if st == CMACUnwrap && c.f.Cipher == DES3 && !lt.tok.Lists(pkcs11.CKM_DES3_CMAC) {
						kcvs = append(kcvs, kcvs[0])
						continue
					}
					res, err := lt.tok.Derive(ctx, base, Request{Function: c.f, Data: data, KeyType: c.out, Strategy: st})
					require.NoError(t, err, st)
					kcv, err := lt.tok.CheckValue(ctx, res.Key)
					require.NoError(t, err)
					kcvs = append(kcvs, hex.EncodeToString(kcv))
					require.NoError(t, lt.tok.Destroy(ctx, res.Key))
				}
				assert.Equal(t, kcvs[0], kcvs[1], "native and mac-unwrap differ for %s", c.f.Name())
				assert.Equal(t, kcvs[0], kcvs[2], "native and cmac-unwrap differ for %s", c.f.Name())
				require.NoError(t, lt.tok.Destroy(ctx, base))
			}
		})
	}
}

// TestMACUnwrapNeedsAttributes checks the attribute rules and that a token
// without ECB unwrap (SoftHSM2) fails cleanly.
func TestMACUnwrapNeedsAttributes(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128, Strategy: MACUnwrap}
		noSign := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), pkcs11.NewAttribute(pkcs11.CKA_SIGN, false))
		objects := lt.objects(t)
		calls := lt.tok.calls.Load()
		_, err := lt.tok.Derive(ctx, noSign, r)
		assert.ErrorIs(t, err, ErrMissingAttribute)
		assert.Contains(t, err.Error(), "CKA_SIGN")
		assert.Equal(t, calls, lt.tok.calls.Load())
		r.Strategy = CMACUnwrap
		noEnc := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false))
		_, err = lt.tok.Derive(ctx, noEnc, r)
		assert.ErrorIs(t, err, ErrMissingAttribute)
		assert.Contains(t, err.Error(), "CKA_ENCRYPT")
		objects = lt.objects(t)
		if lt.kind == "softhsm2" {
			good := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
			objects = lt.objects(t)
			_, err = lt.tok.Derive(ctx, good, r)
			require.Error(t, err, "SoftHSM2 does not unwrap with ECB")
			assert.Equal(t, objects, lt.objects(t))
		}
	})
}
