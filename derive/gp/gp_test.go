package gp_test

import (
	"context"
	"crypto/des"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/gp"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

var unhex = lab.Unhex

// The GlobalPlatform default test key '40 41 ... 4F', the static ENC, MAC
// and DEK key of openjavacard-tools' tests (GPKeySet.GLOBALPLATFORM).
const gpDefaultKey = "404142434445464748494A4B4C4D4E4F"

// SCP02 session keys published in OpenJavaCard/openjavacard-tools,
// globalplatform/src/test/java/org/openjavacard/gp/scp/SCP02DerivationTest.java
// (static keys: the default key above; "KEK" there is the DEK).
var scp02Vectors = []struct {
	seq           string
	enc, mac, dek string
}{
	{"0000", "010b0371d78377b801f2d62afc671d95", "d1c28c601652a4770d67ad82d2d2e1c4", "e11987ee331b417a5d67d760692f89d4"},
	{"0001", "25c9794a1205ff244f5fa0378d2f8d59", "9bed98891580c3b245fe9ec58bfa8d2a", "0e51fdf196141f227a57bd154012fd39"},
	{"007F", "f463d35410fd6ed925c7b07b333cfaf9", "161c8aa468e658c45ae3eca8387dfb19", "369a67c04590b93101ca413613db706a"},
	{"FFFF", "e75adaaf916de18a01ab9acc6ef84b8b", "66f6b778a1fafccc9de6c253233be33d", "3c750e0f60899ffc8f0d26d860ae6c95"},
}

// SCP03 session keys published in OpenJavaCard/openjavacard-tools,
// globalplatform/src/test/java/org/openjavacard/gp/scp/SCP03DerivationTest.java
// (testDeriveSCP03_000010; static keys: the default key as AES-128).
var scp03Vector = struct {
	host, card     string
	enc, mac, rmac string
}{"A7F76C713F0A713D", "31900058C1C451A2",
	"258a78866f41482bef482dc8ca976ccd", "053db6abc7fdf3b63a0d965ee16b0255", "eda0b4f2ec0345bfc50f3bc59cfef936"}

func refSCP02(t *testing.T, key []byte, k gp.SCP02Key, seq []byte) []byte {
	b, err := des.NewTripleDESCipher(append(append([]byte{}, key...), key[:8]...))
	require.NoError(t, err)
	data := make([]byte, 16)
	copy(data, k.Constant())
	copy(data[2:], seq)
	out := make([]byte, 16)
	x := make([]byte, 8)
	for i := 0; i < 16; i += 8 {
		for j := 0; j < 8; j++ {
			x[j] ^= data[i+j]
		}
		b.Encrypt(x, x)
		copy(out[i:], x)
	}
	return out
}

// refSCP03 is Amendment D's KDF in software (for one or two PRF blocks).
func refSCP03(t *testing.T, key []byte, constant byte, context []byte) []byte {
	b := schemetest.Block(t, pkcs11.CKK_AES, key)
	var out []byte
	for i := byte(1); len(out) < len(key); i++ {
		msg := append(make([]byte, 11), constant, 0, byte(len(key)*8>>8), byte(len(key)*8), i)
		out = append(out, schemetest.CMAC(b, append(msg, context...))...)
	}
	return out[:len(key)]
}

func TestReferenceReproducesPublishedVectors(t *testing.T) {
	key := unhex(gpDefaultKey)
	for _, v := range scp02Vectors {
		seq := unhex(v.seq)
		assert.Equal(t, v.enc, hex.EncodeToString(refSCP02(t, key, gp.SCP02SENC, seq)))
		assert.Equal(t, v.mac, hex.EncodeToString(refSCP02(t, key, gp.SCP02CMAC, seq)))
		assert.Equal(t, v.dek, hex.EncodeToString(refSCP02(t, key, gp.SCP02DEK, seq)))
	}
	ctx := unhex(scp03Vector.host + scp03Vector.card)
	assert.Equal(t, scp03Vector.enc, hex.EncodeToString(refSCP03(t, key, 0x04, ctx)))
	assert.Equal(t, scp03Vector.mac, hex.EncodeToString(refSCP03(t, key, 0x06, ctx)))
	assert.Equal(t, scp03Vector.rmac, hex.EncodeToString(refSCP03(t, key, 0x07, ctx)))
}

func TestSCP02PublishedVectors(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		static := lt.Base(t, pkcs11.CKK_DES2, unhex(gpDefaultKey))
		for _, v := range scp02Vectors {
			seq := unhex(v.seq)
			for _, c := range []struct {
				k    gp.SCP02Key
				want []byte
			}{
				{gp.SCP02SENC, unhex(v.enc)},
				{gp.SCP02CMAC, unhex(v.mac)},
				{gp.SCP02DEK, unhex(v.dek)},
				{gp.SCP02RMAC, refSCP02(t, unhex(gpDefaultKey), gp.SCP02RMAC, seq)}, // no published R-MAC key
			} {
				objects := lt.Objects(t)
				res, err := gp.SCP02SessionKey(ctx, lt.Tok, static, c.k, seq, scheme.Options{})
				require.NoError(t, err, "%s %s", v.seq, c.k)
				assert.Equal(t, objects+1, lt.Objects(t))
				assert.Equal(t, "des3-cbc", res.Function)
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_DES2, c.want), lt.KCV(t, res.Key), "%s %s", v.seq, c.k)
				if v.seq == "0001" && c.k == gp.SCP02SENC {
					t.Logf("%s: scp02: strategy %s, %d calls", lt.Kind, res.Strategy, res.Calls)
				}
				require.NoError(t, lt.Tok.Destroy(ctx, res.Key))
			}
		}
	})
}

func TestSCP03PublishedVector(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		static := lt.Base(t, pkcs11.CKK_AES, unhex(gpDefaultKey))
		host, card := unhex(scp03Vector.host), unhex(scp03Vector.card)
		for _, c := range []struct {
			k    gp.SCP03Key
			want string
		}{{gp.SCP03SENC, scp03Vector.enc}, {gp.SCP03SMAC, scp03Vector.mac}, {gp.SCP03SRMAC, scp03Vector.rmac}} {
			objects := lt.Objects(t)
			res, err := gp.SCP03SessionKey(ctx, lt.Tok, static, c.k, host, card, scheme.Options{})
			if lt.Kind == "softhsm2" {
				// SoftHSM2 2.6.1 has no CKM_SP800_108_COUNTER_KDF.
				require.Error(t, err)
				assert.ErrorIs(t, err, derive.ErrUnsupported)
				assert.Equal(t, objects, lt.Objects(t))
				continue
			}
			require.NoError(t, err, c.k.String())
			assert.Equal(t, objects+1, lt.Objects(t))
			assert.Equal(t, "sp800-108-counter", res.Function)
			assert.Equal(t, derive.KeyAES128, res.KeyType)
			assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(c.want)), lt.KCV(t, res.Key), c.k.String())
			if c.k == gp.SCP03SENC {
				t.Logf("%s: scp03: strategy %s, %d calls", lt.Kind, res.Strategy, res.Calls)
			}
			require.NoError(t, lt.Tok.Destroy(ctx, res.Key))
		}
	})
}

// TestSCP03LongKeys: static AES-192 and AES-256 keys give session keys of
// their length, two PRF blocks (no published vector: the reference is the
// one anchored above).
func TestSCP03LongKeys(t *testing.T) {
	ctx := context.Background()
	for _, lt := range labtok.All(t) {
		if lt.Kind == "softhsm2" {
			continue
		}
		t.Run(lt.Kind, func(t *testing.T) {
			for _, n := range []int{24, 32} {
				key := make([]byte, n)
				for i := range key {
					key[i] = byte(0x40 + i)
				}
				static := lt.Base(t, pkcs11.CKK_AES, key)
				host, card := unhex("0001020304050607101112131415161718191a1b1c1d1e1f"[:32]), unhex("f0f1f2f3f4f5f6f7e0e1e2e3e4e5e6e7")
				res, err := gp.SCP03SessionKey(ctx, lt.Tok, static, gp.SCP03SMAC, host, card, scheme.Options{})
				require.NoError(t, err)
				assert.Equal(t, n, res.KeyType.Len())
				want := refSCP03(t, key, 0x06, append(append([]byte{}, host...), card...))
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, want), lt.KCV(t, res.Key))
				require.NoError(t, lt.Tok.Destroy(ctx, res.Key))
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		des2 := lt.Base(t, pkcs11.CKK_DES2, unhex(gpDefaultKey))
		aes := lt.Base(t, pkcs11.CKK_AES, unhex(gpDefaultKey))
		objects := lt.Objects(t)
		eight := make([]byte, 8)
		for _, c := range []struct {
			name string
			err  error
			want error
		}{
			{"scp03 s-dek", second(gp.SCP03SessionKey(ctx, lt.Tok, aes, gp.SCP03SDEK, eight, eight, scheme.Options{})), derive.ErrInvalidInput},
			{"scp03 challenges of unequal length", second(gp.SCP03SessionKey(ctx, lt.Tok, aes, gp.SCP03SENC, eight, make([]byte, 16), scheme.Options{})), derive.ErrInvalidInput},
			{"scp03 from a DES key", second(gp.SCP03SessionKey(ctx, lt.Tok, des2, gp.SCP03SENC, eight, eight, scheme.Options{})), derive.ErrKeyType},
			{"scp02 sequence of 3 bytes", second(gp.SCP02SessionKey(ctx, lt.Tok, des2, gp.SCP02SENC, make([]byte, 3), scheme.Options{})), derive.ErrInvalidInput},
			{"scp02 unknown key", second(gp.SCP02SessionKey(ctx, lt.Tok, des2, 9, make([]byte, 2), scheme.Options{})), derive.ErrInvalidInput},
			{"scp02 from an AES key", second(gp.SCP02SessionKey(ctx, lt.Tok, aes, gp.SCP02SENC, make([]byte, 2), scheme.Options{})), derive.ErrKeyType},
		} {
			require.Error(t, c.err, c.name)
			assert.True(t, errors.Is(c.err, c.want), "%s: %v", c.name, c.err)
		}
		assert.Equal(t, objects, lt.Objects(t))
	})
}

func second(_ *scheme.Result, err error) error { return err }
