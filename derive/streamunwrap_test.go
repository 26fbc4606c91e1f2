package derive

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// TestStreamUnwrapOnLabTokens records what the lab tokens do with
// stream-mode unwrap: both refuse it, cleanly, leaving no object behind —
// for one block and for the multi-block join whose intermediates must go.
func TestStreamUnwrapOnLabTokens(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		key := lab.Random(t, 16)
		base := lt.importKey(t, pkcs11.CKK_AES, key)
		for _, c := range []struct {
			name string
			r    Request
		}{
			{"one block", Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128, Strategy: StreamUnwrap}},
			{"two blocks joined", Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 32), KeyType: KeyAES256, Strategy: StreamUnwrap}},
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
		_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: CBC, IV: lab.Random(t, 16)}, Data: lab.Random(t, 32), KeyType: KeyAES256, Strategy: StreamUnwrap})
		require.Error(t, err)
		assert.ErrorIs(t, err, ErrUnsupported)
		assert.Equal(t, calls, lt.tok.calls.Load())
	})
}

// TestStreamUnwrapEmulated runs stream-unwrap on NSS softoken behind a
// forwarder that plays a token unwrapping in CTR, OFB or CFB-128 mode (no
// lab token does): the joining of blocks in the token, the truncation and
// the destruction of intermediates, for each mode, against the reference.
func TestStreamUnwrapEmulated(t *testing.T) {
	for _, mode := range []struct {
		name string
		hide []string
	}{
		{"ctr", nil},
		{"ofb", []string{"CKM_AES_CTR"}},
		{"cfb128", []string{"CKM_AES_CTR", "0x2104" /* CKM_AES_OFB */}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			lt, _ := wrapped(t, fwd.Config{Hide: mode.hide, EmulateStreamUnwrap: true})
			ctx := context.Background()
			key := lab.Random(t, 32)
			base := lt.importKey(t, pkcs11.CKK_AES, key)
			iv := lab.Random(t, 16)
			for _, c := range []struct {
				name string
				f    Encrypt
				data int
				out  KeyType
			}{
				{"ecb 1 block", Encrypt{Cipher: AES, Mode: ECB}, 16, KeyAES128},
				{"cbc 1 block", Encrypt{Cipher: AES, Mode: CBC, IV: iv}, 16, KeyAES128},
				{"ecb 2 blocks joined", Encrypt{Cipher: AES, Mode: ECB}, 32, KeyAES256},
				{"ecb 2 blocks truncated", Encrypt{Cipher: AES, Mode: ECB}, 32, KeyAES192},
				{"ecb 3 blocks joined", Encrypt{Cipher: AES, Mode: ECB}, 48, KeyGeneric(48)},
				{"ecb 1 block into des2", Encrypt{Cipher: AES, Mode: ECB}, 16, KeyDES2},
			} {
				t.Run(c.name, func(t *testing.T) {
					data := lab.Random(t, c.data)
					objects := lt.objects(t)
					res, err := lt.tok.Derive(ctx, base, Request{Function: c.f, Data: data, KeyType: c.out, Strategy: StreamUnwrap})
					require.NoError(t, err)
					defer lt.tok.Destroy(ctx, res.Key)
					assert.Equal(t, objects+1, lt.objects(t), "intermediates left behind")
					k := blocksFor(AES, c.out)
					wantCalls := 4*k - 3 + readBack
					assert.Equal(t, wantCalls, res.Calls)
					ref := refEncrypt(t, pkcs11.CKK_AES, key, c.f, data)[:c.out.n]
					if c.out.ckk == pkcs11.CKK_GENERIC_SECRET {
						assertHMAC(t, lt, res.Key, ref)
						return
					}
					kcv, err := lt.tok.CheckValue(ctx, res.Key)
					require.NoError(t, err)
					assert.Equal(t, refKCV(t, c.out, ref), kcv)
				})
			}
		})
	}
}

// TestStreamUnwrapFaults fails each call of a three-block stream-unwrap in
// turn: the intermediates are destroyed every time.
func TestStreamUnwrapFaults(t *testing.T) {
	lt, w := wrapped(t, fwd.Config{EmulateStreamUnwrap: true})
	ctx := context.Background()
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
	r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 48), KeyType: KeyGeneric(48), Strategy: StreamUnwrap}
	objects := lt.objects(t)
	for _, fn := range []string{"C_UnwrapKey", "C_DeriveKey", "C_GetAttributeValue"} {
		for n := 1; n <= 3; n++ {
			fwd.Configure(t, w, fwd.Config{EmulateStreamUnwrap: true, Faults: []fwd.Fault{{Func: fn, N: n, CKR: pkcs11.CKR_DEVICE_ERROR}}})
			res, err := lt.tok.Derive(ctx, base, r)
			if err == nil {
				// Fewer than n calls of fn: no fault happened.
				require.NoError(t, lt.tok.Destroy(ctx, res.Key))
				continue
			}
			assert.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_DEVICE_ERROR), "%s #%d", fn, n)
			assert.Equal(t, objects, lt.objects(t), "%s #%d left an object", fn, n)
		}
	}
}
