package an10922_test

import (
	"context"
	"encoding/hex"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/an10922"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

var unhex = lab.Unhex

// AN10922's worked AES-128 example (reproduced in
// hst125fan/nxp-key-diversification, AN10922.py, test(), target1):
// master key, UID, AID, system identifier ("NXP Abu") and the
// diversified key.
var (
	anMaster = unhex("00112233445566778899AABBCCDDEEFF")
	anUID    = unhex("04782E21801D80")
	anAID    = unhex("3042F5")
	anSysID  = unhex("4E585020416275")
	anDK     = unhex("A8DD63A3B89D54B37CA802473FDA9175")
)

// refAN10922 is AN10922's AES-128 diversification in software: 0x01 || M padded to 32 bytes with
// 0x80 00.. (K2) or unpadded at 32 bytes (K1), CMAC'ed.
func refAN10922(t *testing.T, key, m []byte) []byte {
	b := schemetest.Block(t, pkcs11.CKK_AES, key)
	d := append([]byte{0x01}, m...)
	// schemetest.CMAC pads to the next block; AN10922 always to 32 bytes.
	if len(d) < 32 {
		l := make([]byte, 16)
		b.Encrypt(l, l)
		k1 := dbl(l)
		k2 := dbl(k1)
		d = append(d, 0x80)
		d = append(d, make([]byte, 32-len(d))...)
		for i := 0; i < 16; i++ {
			d[16+i] ^= k2[i]
		}
		x := make([]byte, 16)
		b.Encrypt(x, d[:16])
		for i := 0; i < 16; i++ {
			x[i] ^= d[16+i]
		}
		b.Encrypt(x, x)
		return x
	}
	return schemetest.CMAC(b, d)
}

func dbl(in []byte) []byte {
	out := make([]byte, 16)
	for i := 0; i < 16; i++ {
		out[i] = in[i] << 1
		if i < 15 {
			out[i] |= in[i+1] >> 7
		}
	}
	if in[0]&0x80 != 0 {
		out[15] ^= 0x87
	}
	return out
}

func TestReferenceReproducesPublishedVector(t *testing.T) {
	m := an10922.Input(anUID, anAID, anSysID)
	assert.Equal(t, "04782e21801d803042f54e585020416275", hex.EncodeToString(m))
	assert.Equal(t, hex.EncodeToString(anDK), hex.EncodeToString(refAN10922(t, anMaster, m)))
	// The token's computation: standard CMAC of 0x01 || M, the same for
	// every exact length.
	for n := an10922.MinExactInput; n <= an10922.MaxInput; n++ {
		m := make([]byte, n)
		for i := range m {
			m[i] = byte(i*7 + n)
		}
		assert.Equal(t, refAN10922(t, anMaster, m), schemetest.CMAC(schemetest.Block(t, pkcs11.CKK_AES, anMaster), append([]byte{1}, m...)), "M of %d bytes", n)
	}
	// ... and not for the shorter ones, which are refused.
	for n := 1; n < an10922.MinExactInput; n++ {
		m := make([]byte, n)
		assert.NotEqual(t, refAN10922(t, anMaster, m), schemetest.CMAC(schemetest.Block(t, pkcs11.CKK_AES, anMaster), append([]byte{1}, m...)), "M of %d bytes", n)
	}
}

func TestPublishedVector(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		master := lt.Base(t, pkcs11.CKK_AES, anMaster)
		objects := lt.Objects(t)
		res, err := an10922.DiversifyAES128(ctx, lt.Tok, master, an10922.Input(anUID, anAID, anSysID), scheme.Options{})
		if lt.Kind == "softhsm2" {
			require.Error(t, err)
			assert.ErrorIs(t, err, derive.ErrUnsupported)
			assert.Equal(t, objects, lt.Objects(t))
			return
		}
		require.NoError(t, err)
		defer lt.Tok.Destroy(ctx, res.Key)
		assert.Equal(t, objects+1, lt.Objects(t))
		t.Logf("%s: an10922: strategy %s, %d calls", lt.Kind, res.Strategy, res.Calls)
		assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, anDK), lt.KCV(t, res.Key))
	})
}

// TestExactLengths: every exact input length, 16 and 31 bytes at the
// edges (the unpadded, K1 case included), against the reference.
func TestExactLengths(t *testing.T) {
	ctx := context.Background()
	for _, lt := range labtok.All(t) {
		if lt.Kind == "softhsm2" {
			continue
		}
		t.Run(lt.Kind, func(t *testing.T) {
			master := lt.Base(t, pkcs11.CKK_AES, anMaster)
			for _, n := range []int{16, 17, 30, 31} {
				m := make([]byte, n)
				for i := range m {
					m[i] = byte(0xa0 + i)
				}
				res, err := an10922.DiversifyAES128(ctx, lt.Tok, master, m, scheme.Options{})
				require.NoError(t, err, n)
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, refAN10922(t, anMaster, m)), lt.KCV(t, res.Key), "M of %d bytes", n)
				require.NoError(t, lt.Tok.Destroy(ctx, res.Key))
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		master := lt.Base(t, pkcs11.CKK_AES, anMaster)
		aes256 := lt.Base(t, pkcs11.CKK_AES, make([]byte, 32))
		objects := lt.Objects(t)
		_, err := an10922.DiversifyAES128(ctx, lt.Tok, master, make([]byte, 15), scheme.Options{})
		assert.ErrorIs(t, err, scheme.ErrNotComputable)
		assert.ErrorIs(t, err, derive.ErrUnsupported)
		assert.Contains(t, err.Error(), "K2")
		_, err = an10922.DiversifyAES128(ctx, lt.Tok, master, make([]byte, 32), scheme.Options{})
		assert.ErrorIs(t, err, derive.ErrInvalidInput)
		_, err = an10922.DiversifyAES128(ctx, lt.Tok, master, nil, scheme.Options{})
		assert.ErrorIs(t, err, derive.ErrInvalidInput)
		_, err = an10922.DiversifyAES128(ctx, lt.Tok, aes256, make([]byte, 17), scheme.Options{})
		assert.ErrorIs(t, err, derive.ErrKeyType)
		assert.Equal(t, objects, lt.Objects(t))
	})
}
