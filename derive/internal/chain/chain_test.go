package chain_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/mechanisms"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

func step(data byte) derive.Request {
	d := make([]byte, 16)
	d[0] = data
	return derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}, Data: d, KeyType: derive.KeyAES128, Usage: derive.UseDerive}
}

// TestCleanupOnEveryPath: intermediates are destroyed on success, and
// intermediates and the final key on error and on panic.
func TestCleanupOnEveryPath(t *testing.T) {
	ctx := context.Background()
	schemetest.ForEach(t, func(t *testing.T, lt *schemetest.Token) {
		base := lt.Import(t, pkcs11.CKK_AES, make([]byte, 16))
		objects := lt.Objects(t)

		res, err := chain.Run(ctx, lt.Tok, func(c *chain.Chain) error {
			a, err := c.Step(base, step(1))
			if err != nil {
				return err
			}
			b, err := c.Step(a, step(2))
			if err != nil {
				return err
			}
			require.NoError(t, c.Drop(a))
			_, err = c.Final(b, step(3))
			return err
		})
		require.NoError(t, err)
		assert.Equal(t, 3, res.Derivations)
		assert.Equal(t, objects+1, lt.Objects(t))
		require.NoError(t, lt.Tok.Destroy(ctx, res.Key))

		boom := errors.New("boom")
		_, err = chain.Run(ctx, lt.Tok, func(c *chain.Chain) error {
			a, err := c.Step(base, step(1))
			if err != nil {
				return err
			}
			if _, err := c.Final(a, step(2)); err != nil {
				return err
			}
			return boom
		})
		assert.ErrorIs(t, err, boom)
		assert.Equal(t, objects, lt.Objects(t))

		assert.PanicsWithValue(t, "panic", func() {
			chain.Run(ctx, lt.Tok, func(c *chain.Chain) error {
				a, _ := c.Step(base, step(1))
				c.Final(a, step(2))
				panic("panic")
			})
		})
		assert.Equal(t, objects, lt.Objects(t))

		_, err = chain.Run(ctx, lt.Tok, func(c *chain.Chain) error { return nil })
		assert.Error(t, err, "a scheme that makes no key is an error")
	})
}

// TestFinalRaw: one C_DeriveKey with CKM_XOR_BASE_AND_DATA (NSS runs it,
// SoftHSM2 refuses it cleanly), derive's template and checks.
func TestFinalRaw(t *testing.T) {
	ctx := context.Background()
	schemetest.ForEach(t, func(t *testing.T, lt *schemetest.Token) {
		v := schemetest.Unhex("0123456789abcdeffedcba9876543210")
		base := lt.Import(t, pkcs11.CKK_DES2, v)
		objects := lt.Objects(t)
		mask := make([]byte, 16)
		for i := range mask {
			mask[i] = 0x0f
		}
		raw := chain.Raw{Mechanism: pkcs11.CKM_XOR_BASE_AND_DATA, Params: &mechanisms.KeyDerivationStringData{Data: mask}, Function: "xor-base-and-data"}
		req := derive.Request{KeyType: derive.KeyDES2, Usage: derive.UseEncrypt, Label: "xored"}
		res, err := chain.Run(ctx, lt.Tok, func(c *chain.Chain) error {
			_, err := c.FinalRaw("test", base, raw, req)
			return err
		})
		if lt.Kind == "softhsm2" {
			assert.ErrorIs(t, err, scheme.ErrNotComputable)
			assert.ErrorIs(t, err, derive.ErrUnsupported)
			assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID))
			assert.Equal(t, objects, lt.Objects(t))
			return
		}
		require.NoError(t, err)
		defer lt.Tok.Destroy(ctx, res.Key)
		k := res.Key
		assert.True(t, k.Sensitive && !k.Extractable && !k.Token && k.Encrypt && !k.Decrypt && !k.Derive)
		assert.Equal(t, "xored", k.Label)
		assert.Equal(t, 4, res.Calls, "C_GetSessionInfo, C_DeriveKey, C_GetAttributeValue ×2")
		want := make([]byte, 16)
		for i := range v {
			want[i] = v[i] ^ 0x0f
		}
		assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_DES2, want), lt.KCV(t, k))

		// A base key without CKA_DERIVE is refused before any call.
		nd := lt.Import(t, pkcs11.CKK_DES2, v, pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
		_, err = chain.Run(ctx, lt.Tok, func(c *chain.Chain) error {
			_, err := c.FinalRaw("test", nd, raw, req)
			return err
		})
		assert.ErrorIs(t, err, derive.ErrMissingAttribute)
	})
}
