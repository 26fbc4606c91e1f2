package tr31_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/derive/tr31"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

var unhex = lab.Unhex

// Published KBPK → KBEK, KBAK: the worked examples of ASC X9 TR-31-2018
// Annex A, with the derived keys as reproduced in openemv/tr31
// test/tr31_crypto_test.c (commit of its HEAD as fetched; the annex
// sections are the ones it cites).
var vectors = []struct {
	source     string
	v          tr31.Version
	ckk        uint
	kbpk       string
	kbek, kbak string
}{
	{"TR-31:2018 A.7.2.1 (version A)", tr31.VersionA, pkcs11.CKK_DES2, "89E88CF7931444F334BD7547FC3F380C",
		"CCADC9B2D65101B671F83002B97A7D49", "C4A5C1BADE5909BE79F0380AB1727541"},
	{"TR-31:2018 A.7.2.2 (version B)", tr31.VersionB, pkcs11.CKK_DES2, "DD7515F2BFC17F85CE48F3CA25CB21F6",
		"698832F8778A7CFCBC79559DAB07B88A", "DD6CEEC1782D8453671BF8358AF9DB47"},
	{"TR-31:2018 A.7.3.1 (version C)", tr31.VersionC, pkcs11.CKK_DES2, "B8ED59E0A279A295E9F5ED7944FD06B9",
		"FDA81CA5E73CE7D0ACB0A83C01B843FC", "F5A014ADEF34EFD8A4B8A03409B04BF4"},
	{"TR-31:2018 A.7.3.2 (version B)", tr31.VersionB, pkcs11.CKK_DES2, "1D22BF32387C600AD97F9B97A51311AC",
		"BCE8E2AD5D4489FD0EA5236A884DAC58", "1F9B2BDAF969C7B8B6C933AC7B9C6894"},
	{"TR-31:2018 A.7.4 (version D, AES-256)", tr31.VersionD, pkcs11.CKK_AES,
		"88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6",
		"396C9382A6E2E66A088774E1D6E46541F5EAD67D7204F8DD0D7AE8FDA334D3AC",
		"4EF2431769621384045189075675" + "7E573E0673483888F9B7F9B7517827F95022"},
}

// ref is the KDF (versions B, D) or the variant (A, C) in software.
func ref(t *testing.T, v tr31.Version, ckk uint, kbpk []byte, k tr31.Key) []byte {
	switch v {
	case tr31.VersionA, tr31.VersionC:
		x := byte(0x45)
		if k == tr31.KBAK {
			x = 0x4D
		}
		out := make([]byte, len(kbpk))
		for i := range kbpk {
			out[i] = kbpk[i] ^ x
		}
		return out
	}
	b := schemetest.Block(t, ckk, kbpk)
	alg := map[int]uint16{16: 0, 24: 1}[len(kbpk)]
	if v == tr31.VersionD {
		alg = uint16(len(kbpk) / 8)
	}
	usage := byte(0)
	if k == tr31.KBAK {
		usage = 1
	}
	var out []byte
	for i := byte(1); len(out) < len(kbpk); i++ {
		msg := []byte{i, 0, usage, 0, byte(alg >> 8), byte(alg), byte(len(kbpk) * 8 >> 8), byte(len(kbpk) * 8)}
		out = append(out, schemetest.CMAC(b, msg)...)
	}
	return out[:len(kbpk)]
}

func TestReferenceReproducesPublishedVectors(t *testing.T) {
	for _, v := range vectors {
		kbpk := unhex(v.kbpk)
		assert.Equal(t, v.kbek, upper(ref(t, v.v, v.ckk, kbpk, tr31.KBEK)), v.source)
		assert.Equal(t, v.kbak, upper(ref(t, v.v, v.ckk, kbpk, tr31.KBAK)), v.source)
	}
}

func upper(b []byte) string {
	s := []byte(hex.EncodeToString(b))
	for i, c := range s {
		if c >= 'a' {
			s[i] = c - 32
		}
	}
	return string(s)
}

// runs says whether the lab token runs a version's mechanism: version D
// needs CKM_SP800_108_COUNTER_KDF (NSS), A and C CKM_XOR_BASE_AND_DATA
// (NSS), B the SP 800-108 KDF with a TDES-CMAC PRF (no lab token).
func runs(kind string, v tr31.Version) bool {
	return kind != "softhsm2" && v != tr31.VersionB
}

// TestPublishedVectors derives KBEK and KBAK inside every lab token from
// the imported published KBPK and compares their check values, computed in
// the token, with the published keys'. Where the token cannot compute a
// version, the refusal is clean: an error matching derive.ErrUnsupported
// and nothing left behind.
func TestPublishedVectors(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		for _, v := range vectors {
			t.Run(v.source, func(t *testing.T) {
				kbpk := lt.Base(t, v.ckk, unhex(v.kbpk))
				objects := lt.Objects(t)
				use := scheme.Options{Usage: derive.UseEncrypt | derive.UseSign}
				kbek, kbak, err := tr31.Keys(ctx, lt.Tok, kbpk, v.v, use, use)
				if !runs(lt.Kind, v.v) {
					require.Error(t, err)
					assert.ErrorIs(t, err, derive.ErrUnsupported)
					if v.v != tr31.VersionD {
						assert.ErrorIs(t, err, scheme.ErrNotComputable)
					}
					t.Logf("%s: refused: %v", lt.Kind, err)
					assert.Equal(t, objects, lt.Objects(t))
					return
				}
				require.NoError(t, err)
				defer lt.Tok.Destroy(ctx, kbek.Key)
				defer lt.Tok.Destroy(ctx, kbak.Key)
				assert.Equal(t, objects+2, lt.Objects(t))
				assert.True(t, kbek.Key.Sensitive && !kbek.Key.Extractable)
				t.Logf("%s: %s: %s, strategy %s, %d calls", lt.Kind, v.source, kbek.Function, kbek.Strategy, kbek.Calls)
				assert.Equal(t, schemetest.RefKCV(t, v.ckk, unhex(v.kbek)), lt.KCV(t, kbek.Key), "KBEK")
				assert.Equal(t, schemetest.RefKCV(t, v.ckk, unhex(v.kbak)), lt.KCV(t, kbak.Key), "KBAK")
			})
		}
	})
}

// TestVersionDKeyLengths: AES-128 and AES-192 KBPKs (the latter takes the
// leading 8 bytes of the second CMAC block), against the reference.
func TestVersionDKeyLengths(t *testing.T) {
	ctx := context.Background()
	for _, lt := range labtok.All(t) {
		if !runs(lt.Kind, tr31.VersionD) {
			continue
		}
		t.Run(lt.Kind, func(t *testing.T) {
			for _, n := range []int{16, 24} {
				v := make([]byte, n)
				for i := range v {
					v[i] = byte(0x11 * (i + 1))
				}
				kbpk := lt.Base(t, pkcs11.CKK_AES, v)
				for _, k := range []tr31.Key{tr31.KBEK, tr31.KBAK} {
					res, err := tr31.Derive(ctx, lt.Tok, kbpk, tr31.VersionD, k, scheme.Options{Usage: derive.UseEncrypt})
					require.NoError(t, err)
					assert.Equal(t, n, res.KeyType.Len())
					assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, ref(t, tr31.VersionD, pkcs11.CKK_AES, v, k)), lt.KCV(t, res.Key), "%d %v", n, k)
					require.NoError(t, lt.Tok.Destroy(ctx, res.Key))
				}
			}
		})
	}
}

// TestDefaultUsage: the KBEK encrypts and decrypts, the KBAK MACs, and
// neither does anything else.
func TestDefaultUsage(t *testing.T) {
	ctx := context.Background()
	for _, lt := range labtok.All(t) {
		if lt.Kind != "nss" {
			continue
		}
		kbpk := lt.Base(t, pkcs11.CKK_AES, unhex(vectors[4].kbpk))
		kbek, kbak, err := tr31.Keys(ctx, lt.Tok, kbpk, tr31.VersionD, scheme.Options{}, scheme.Options{})
		require.NoError(t, err)
		defer lt.Tok.Destroy(ctx, kbek.Key)
		defer lt.Tok.Destroy(ctx, kbak.Key)
		e, a := kbek.Key, kbak.Key
		assert.True(t, e.Encrypt && e.Decrypt && !e.Sign && !e.Verify && !e.Wrap && !e.Unwrap && !e.Derive)
		assert.True(t, a.Sign && a.Verify && !a.Encrypt && !a.Decrypt && !a.Wrap && !a.Unwrap && !a.Derive)
		// The KBAK's CMAC, in the token, equals the published KBAK's.
		msg := []byte("D0112P0AE00E0000")
		want := schemetest.CMAC(schemetest.Block(t, pkcs11.CKK_AES, unhex(vectors[4].kbak)), msg)
		assert.Equal(t, want, lt.Sign(t, a, pkcs11.CKM_AES_CMAC, msg))
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		aes := lt.Base(t, pkcs11.CKK_AES, make([]byte, 16))
		des2 := lt.Base(t, pkcs11.CKK_DES2, unhex(vectors[0].kbpk))
		noDerive := lt.Base(t, pkcs11.CKK_DES2, unhex(vectors[0].kbpk), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
		objects := lt.Objects(t)
		for _, c := range []struct {
			name string
			err  error
			want error
		}{
			{"version D with a TDES KBPK", second(tr31.Derive(ctx, lt.Tok, des2, tr31.VersionD, tr31.KBEK, scheme.Options{})), derive.ErrKeyType},
			{"version A with an AES KBPK", second(tr31.Derive(ctx, lt.Tok, aes, tr31.VersionA, tr31.KBEK, scheme.Options{})), derive.ErrKeyType},
			{"unknown version", second(tr31.Derive(ctx, lt.Tok, aes, 'E', tr31.KBEK, scheme.Options{})), derive.ErrInvalidInput},
			{"unknown key", second(tr31.Derive(ctx, lt.Tok, aes, tr31.VersionD, 7, scheme.Options{})), derive.ErrInvalidInput},
			{"KBPK without CKA_DERIVE", second(tr31.Derive(ctx, lt.Tok, noDerive, tr31.VersionA, tr31.KBEK, scheme.Options{})), derive.ErrMissingAttribute},
		} {
			require.Error(t, c.err, c.name)
			assert.True(t, errors.Is(c.err, c.want), "%s: %v", c.name, c.err)
		}
		assert.Equal(t, objects, lt.Objects(t))
		for _, s := range []string{"a", "B", "c", "D"} {
			_, err := tr31.ParseVersion(s)
			assert.NoError(t, err)
		}
		for _, s := range []string{"", "E", "DD"} {
			_, err := tr31.ParseVersion(s)
			assert.ErrorIs(t, err, derive.ErrInvalidInput)
		}
	})
}

func second(_ *scheme.Result, err error) error { return err }
