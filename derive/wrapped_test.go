package derive_test

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/kwref"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// TestDeriveAndWrap: on every lab token, DK wrapped under a transport key
// (CKM_AES_KEY_WRAP) is the software reference's (AES-ECB of the data
// under K, wrapped by RFC 3394 in Go), its check value the reference's,
// whatever the request says of extractability and usage, with nothing
// left in the token; a persistent request and a missing wrapping key are
// refused before any call.
func TestDeriveAndWrap(t *testing.T) {
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		ctx := context.Background()
		kValue, tValue, data := lab.Random(t, 16), lab.Random(t, 16), lab.Random(t, 16)
		base := lt.Known(t, pkcs11.CKK_AES, kValue)
		transport := lt.Create(t, pkcs11.CKK_AES, tValue, pkcs11.NewAttribute(pkcs11.CKA_WRAP, true))
		objects := lt.Objects(t)
		req := derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}, Data: data,
			KeyType: derive.KeyAES128, Usage: derive.UseDerive} // neither extractable nor able to encrypt: DeriveAndWrap makes it so
		res, w, err := lt.Tok.DeriveAndWrap(ctx, base, req, transport, pkcs11.CKM_AES_KEY_WRAP, nil)
		require.NoError(t, err)
		dk := lab.AESBlock(t, kValue, data)
		want, err := kwref.Wrap(tValue, kwref.IV, dk)
		require.NoError(t, err)
		assert.Equal(t, want, w.Key, "DK wrapped, as RFC 3394 in software")
		assert.Equal(t, lab.AESBlock(t, dk, make([]byte, 16))[:3], w.KCV)
		assert.True(t, res.Key.Sensitive, "DK was sensitive")
		assert.Equal(t, objects, lt.Objects(t), "DK destroyed")

		calls := lt.Tok.Calls()
		req.Persistent = true
		_, _, err = lt.Tok.DeriveAndWrap(ctx, base, req, transport, pkcs11.CKM_AES_KEY_WRAP, nil)
		assert.ErrorIs(t, err, derive.ErrInvalidInput)
		req.Persistent = false
		_, _, err = lt.Tok.DeriveAndWrap(ctx, base, req, nil, pkcs11.CKM_AES_KEY_WRAP, nil)
		assert.ErrorIs(t, err, derive.ErrInvalidInput)
		assert.Equal(t, calls, lt.Tok.Calls(), "refused before any call")
		assert.Equal(t, objects, lt.Objects(t))
	})
}
