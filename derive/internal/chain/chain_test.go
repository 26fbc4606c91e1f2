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
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
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
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		base := lt.Base(t, pkcs11.CKK_AES, make([]byte, 16))
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
