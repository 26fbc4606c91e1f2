package derive

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStreamUnwrapOnLabTokens records what the lab tokens do with
// stream-mode unwrap: both refuse it, cleanly, leaving no object behind —
// for one block and for the multi-block join whose intermediates must go.
func TestStreamUnwrapOnLabTokens(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		key := randomBytes(t, 16)
		base := lt.importKey(t, pkcs11.CKK_AES, key)
		for _, c := range []struct {
			name string
			r    Request
		}{
			{"one block", Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: randomBytes(t, 16), KeyType: KeyAES128, Strategy: StreamUnwrap}},
			{"two blocks joined", Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: randomBytes(t, 32), KeyType: KeyAES256, Strategy: StreamUnwrap}},
		} {
			t.Run(c.name, func(t *testing.T) {
				objects := lt.objects(t)
				res, err := lt.tok.Derive(ctx, base, c.r)
				if err == nil {
					// A token that does unwrap in a stream mode: the key must be right.
					defer lt.tok.Destroy(ctx, res.Key)
					t.Logf("%s unwraps with a stream mode", lt.kind)
					f := c.r.Function.(Encrypt)
					kcv, err := lt.tok.CheckValue(ctx, res.Key)
					require.NoError(t, err)
					assert.Equal(t, refKCV(t, c.r.KeyType, refEncrypt(t, pkcs11.CKK_AES, key, f, c.r.Data)[:c.r.KeyType.n]), kcv)
					assert.Equal(t, objects+1, lt.objects(t), "intermediates left behind")
					return
				}
				t.Logf("%s: %v", lt.kind, err)
				assert.ErrorIs(t, err, ErrToken)
				assert.Equal(t, objects, lt.objects(t), "an object was left behind")
			})
		}
		// CBC over more than one block is not computable this way: refused
		// before any call.
		calls := lt.tok.calls.Load()
		_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: CBC, IV: randomBytes(t, 16)}, Data: randomBytes(t, 32), KeyType: KeyAES256, Strategy: StreamUnwrap})
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrUnsupported)
		assert.Equal(t, calls, lt.tok.calls.Load())
	})
}
