package derive

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// TestXORData: DK = K XOR data with CKM_XOR_BASE_AND_DATA (NSS softoken runs
// it, SoftHSM2 2.6.1 refuses it cleanly).
func TestXORData(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		v := lab.Unhex("0123456789abcdeffedcba9876543210")
		base := lt.importKey(t, pkcs11.CKK_DES2, v)
		objects := lt.objects(t)
		mask := make([]byte, 16)
		for i := range mask {
			mask[i] = 0x45 // TR-31's KBEK variant
		}
		res, err := lt.tok.Derive(ctx, base, Request{Function: XORData{}, Data: mask, KeyType: KeyDES2, Label: "xored"})
		if lt.kind == "softhsm2" {
			assert.ErrorIs(t, err, ErrUnsupported)
			assert.Equal(t, objects, lt.objects(t))
			return
		}
		require.NoError(t, err)
		defer lt.tok.Destroy(ctx, res.Key)
		assert.Equal(t, "xor-data", res.Function.Name())
		want := make([]byte, 16)
		for i := range v {
			want[i] = v[i] ^ mask[i]
		}
		assertKeyValue(t, lt, res.Key, KeyDES2, want)
		_, err = lt.tok.Derive(ctx, base, Request{Function: XORData{}, Data: mask[:8], KeyType: KeyDES2})
		assert.ErrorIs(t, err, ErrInvalidInput, "too little data")
	})
}
