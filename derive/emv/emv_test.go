package emv_test

import (
	"context"
	"crypto/des"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/emv"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// The examples (example_test.go) read their token, made by MainExamples,
// from the environment.
func TestMain(m *testing.M) { os.Exit(lab.MainExamples(m, lab.InitNow)) }

var unhex = lab.Unhex

// The issuer master key of pyemv's examples and tests
// (github.com/knovichikhin/pyemv; its check digits 08D7 are in
// tests/test_kd_hsm.py).
const pyemvIMK = "0123456789ABCDEFFEDCBA9876543210"

// refMasterKey is option A/B in software, for the tests: 3DES-ECB of
// Y || ~Y with odd parity.
func refMasterKey(t *testing.T, imk []byte, opt emv.Option, pan, psn string) []byte {
	y, err := emv.MasterKeyBlock(opt, pan, psn)
	require.NoError(t, err)
	b, err := des.NewTripleDESCipher(append(append([]byte{}, imk...), imk[:8]...))
	require.NoError(t, err)
	data := append(append([]byte{}, y...), make([]byte, 8)...)
	for i := 0; i < 8; i++ {
		data[8+i] = ^y[i]
	}
	return oddParity(schemetest.ECB(b, data))
}

func oddParity(k []byte) []byte {
	out := append([]byte{}, k...)
	for i, c := range out {
		n := 0
		for b := c; b != 0; b &= b - 1 {
			n++
		}
		if n%2 == 0 {
			out[i] ^= 1
		}
	}
	return out
}

// refSessionKey is A1.3.1 for Triple DES in software.
func refSessionKey(t *testing.T, mk, r []byte) []byte {
	b, err := des.NewTripleDESCipher(append(append([]byte{}, mk...), mk[:8]...))
	require.NoError(t, err)
	data := append(append([]byte{}, r...), r...)
	data[2], data[10] = 0xF0, 0x0F
	return oddParity(schemetest.ECB(b, data))
}

// masterKeyVector is a published ICC master key (and, where the source
// gives one, a session key derived from it). Check digits are the first
// 2 bytes of the key's check value; a full key gives 3.
type masterKeyVector struct {
	source  string
	opt     emv.Option
	pan     string
	psn     string
	mk      string // the published key, or its check digits
	r       string // session key diversification value, or ""
	skCheck string // the published session key's check digits
}

var masterKeyVectors = []masterKeyVector{
	{source: "pyemv/kd.py, derive_icc_mk_a docstring example", opt: emv.OptionA,
		pan: "12345678901234567", psn: "01", mk: "73AD54688CEF2934B0979857E3C719F1"},
	{source: "pyemv/kd.py, derive_icc_mk_b docstring example", opt: emv.OptionB,
		pan: "12345678901234567", psn: "01", mk: "AD406D7F6D7570916D75E5DCAB8CF737"},
	{source: "pyemv tests/test_kd_hsm.py, test_derive_icc_mk_a_psn", opt: emv.OptionA,
		pan: "12345678901234567", psn: "45", mk: "FF08", r: "1234567890123456", skCheck: "DF82"},
	{source: "pyemv tests/test_kd_hsm.py, test_derive_icc_mk_a_no_psn", opt: emv.OptionA,
		pan: "12345678901234567", psn: "", r: "1234567890123456", skCheck: "3F4F"},
	{source: "pyemv tests/test_kd_hsm.py, test_derive_icc_mk_b_pan17_no_psn", opt: emv.OptionB,
		pan: "12345678901234567", psn: "", mk: "4626", r: "1234567890123456", skCheck: "7F36"},
	{source: "pyemv tests/test_kd_hsm.py, test_derive_icc_mk_b_pan18", opt: emv.OptionB,
		pan: "123456789012345679", psn: "00", mk: "C2F3", r: "1234567890123456", skCheck: "7C35"},
	{source: "pyemv tests/test_kd_hsm.py, test_derive_icc_mk_b_sha_pad (SHA-1 digest needs letter decimalisation)", opt: emv.OptionB,
		pan: "000000000000000005", psn: "23", mk: "DD73", r: "001C000000000000", skCheck: "04F8"},
	{source: "pyemv tests/test_kd_hsm.py, test_derive_icc_mk_b_pan16 (option B on a 16-digit PAN is option A)", opt: emv.OptionB,
		pan: "1234567890123456", psn: "", mk: "BAB0", r: "1234567890123456", skCheck: "BC19"},
}

// publishedCheck is the check value (2 or 3 bytes, lower-case hex) that a
// vector publishes for a key given in full or by its check digits.
func publishedCheck(t *testing.T, v string) string {
	if len(v) == 32 {
		return schemetest.RefKCV(t, pkcs11.CKK_DES2, unhex(v))
	}
	return strings.ToLower(v)
}

// TestReferenceReproducesPublishedVectors anchors the software reference
// (used below for inputs without a published answer) to the published keys.
func TestReferenceReproducesPublishedVectors(t *testing.T) {
	imk := unhex(pyemvIMK)
	require.Equal(t, "08d7", schemetest.RefKCV(t, pkcs11.CKK_DES2, imk)[:4], "pyemv's IMK check digits")
	for _, v := range masterKeyVectors {
		mk := refMasterKey(t, imk, v.opt, v.pan, v.psn)
		if len(v.mk) == 32 {
			assert.Equal(t, v.mk, strings.ToUpper(hex.EncodeToString(mk)), v.source)
		} else if v.mk != "" {
			assert.Equal(t, strings.ToLower(v.mk), schemetest.RefKCV(t, pkcs11.CKK_DES2, mk)[:4], v.source)
		}
		if v.r != "" {
			sk := refSessionKey(t, mk, unhex(v.r))
			assert.Equal(t, strings.ToLower(v.skCheck), schemetest.RefKCV(t, pkcs11.CKK_DES2, sk)[:4], v.source)
		}
	}
	// pyemv/kd.py, derive_common_sk docstring example.
	sk := refSessionKey(t, unhex("0123456789ABCDEFFEDCBA9876543210"), unhex("001C000000000000"))
	assert.Equal(t, "E9FB384AF807B940FEDCEA613461B0C4", strings.ToUpper(hex.EncodeToString(sk)))
}

// TestPublishedVectors reproduces each published vector through the
// public API on every lab token: the issuer master key is imported with
// its published value, MK and SK are derived inside the token, and their
// check values, computed in the token, are compared with the published
// keys' (or their published check digits).
func TestPublishedVectors(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		imk := lt.Base(t, pkcs11.CKK_DES2, unhex(pyemvIMK))
		for _, v := range masterKeyVectors {
			t.Run(v.source, func(t *testing.T) {
				objects := lt.Objects(t)
				mk, err := emv.ICCMasterKey(ctx, lt.Tok, imk, v.opt, v.pan, v.psn, scheme.Options{Usage: derive.UseDerive | derive.UseEncrypt})
				require.NoError(t, err)
				defer lt.Tok.Destroy(ctx, mk.Key)
				assert.Equal(t, objects+1, lt.Objects(t), "MK and nothing else")
				assert.Equal(t, derive.KeyDES2, mk.KeyType)
				assert.Equal(t, "des3-ecb", mk.Function)
				assert.Equal(t, 1, mk.Derivations)
				assert.True(t, mk.Key.Sensitive)
				assert.False(t, mk.Key.Extractable)
				t.Logf("%s: master key: strategy %s, %d calls", lt.Kind, mk.Strategy, mk.Calls)
				kcv := lt.KCV(t, mk.Key)
				want := refMasterKey(t, unhex(pyemvIMK), v.opt, v.pan, v.psn)
				if v.mk != "" {
					pub := publishedCheck(t, v.mk)
					assert.Equal(t, pub, kcv[:len(pub)], "published MK")
				}
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_DES2, want), kcv)
				if v.r == "" {
					return
				}
				sk, err := emv.SessionKey(ctx, lt.Tok, mk.Key, unhex(v.r), scheme.Options{})
				require.NoError(t, err)
				defer lt.Tok.Destroy(ctx, sk.Key)
				t.Logf("%s: session key: strategy %s, %d calls", lt.Kind, sk.Strategy, sk.Calls)
				assert.Equal(t, strings.ToLower(v.skCheck), lt.KCV(t, sk.Key)[:4], "published SK check digits")
			})
		}
		t.Run("pyemv/kd.py derive_common_sk docstring", func(t *testing.T) {
			mk := lt.Base(t, pkcs11.CKK_DES2, unhex("0123456789ABCDEFFEDCBA9876543210"))
			sk, err := emv.SessionKey(ctx, lt.Tok, mk, emv.ATC(0x001C, 8), scheme.Options{})
			require.NoError(t, err)
			defer lt.Tok.Destroy(ctx, sk.Key)
			assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_DES2, unhex("E9FB384AF807B940FEDCEA613461B0C4")), lt.KCV(t, sk.Key))
		})
	})
}

// The AES cases have no published vector: no public EMV library found
// (pyemv, the source of the Triple DES vectors above, derives with Triple
// DES only) publishes an option C master key or an AES-192/256 session
// key. Their reference is software written from Book 2's text (A1.3.1,
// A1.4.3) on FIPS-197 AES (crypto/aes), said to be so; the token's keys
// are compared with it by check values computed in the token.

// refAESSessionKey is A1.3.1 for an AES master key, in software: for
// k = n = 16, SK = AES(MK)[R]; for k > n, the leftmost k bytes of
// AES(MK)[F1] || AES(MK)[F2], with F1 = R0 || R1 || 'F0' || R3 .. R15 and
// F2 = R0 || R1 || '0F' || R3 .. R15.
func refAESSessionKey(t *testing.T, mk, r []byte) []byte {
	b := schemetest.Block(t, pkcs11.CKK_AES, mk)
	if len(mk) == 16 {
		return schemetest.ECB(b, r)
	}
	f1, f2 := append([]byte{}, r...), append([]byte{}, r...)
	f1[2], f2[2] = 0xF0, 0x0F
	return schemetest.ECB(b, append(f1, f2...))[:len(mk)]
}

// refOptionC is A1.4.3 in software: Y is PAN || PSN left-padded with zeros
// to 16 bytes; MK = AES(IMK)[Y] for k = 16, else the leftmost k bytes of
// AES(IMK)[Y] || AES(IMK)[Y XOR 'FF'*16].
func refOptionC(t *testing.T, imk []byte, pan, psn string) []byte {
	if psn == "" {
		psn = "00"
	}
	x := pan + psn
	y := unhex(strings.Repeat("0", 32-len(x)) + x)
	b := schemetest.Block(t, pkcs11.CKK_AES, imk)
	if len(imk) == 16 {
		return schemetest.ECB(b, y)
	}
	ny := make([]byte, 16)
	for i := range y {
		ny[i] = ^y[i]
	}
	return schemetest.ECB(b, append(append([]byte{}, y...), ny...))[:len(imk)]
}

var aesKeys = map[int]string{
	16: "2b7e151628aed2a6abf7158809cf4f3c",                                 // FIPS-197 / SP 800-38A AES-128 key
	24: "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",                 // SP 800-38A AES-192 key
	32: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", // SP 800-38A AES-256 key
}

// TestAESSessionKey: A1.3.1 for AES-128, AES-192 and AES-256 master keys,
// against the software reference, for two diversification values.
func TestAESSessionKey(t *testing.T) {
	ctx := context.Background()
	// The reference differs from a one-block or R-as-is reading of the
	// text, so a token computing either would fail here.
	mk256 := unhex(aesKeys[32])
	r := emv.ATC(0x0123, 16)
	require.NotEqual(t, schemetest.ECB(schemetest.Block(t, pkcs11.CKK_AES, mk256), append(r, r...)), refAESSessionKey(t, mk256, r))
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		for _, n := range []int{16, 24, 32} {
			mkv := unhex(aesKeys[n])
			mk := lt.Base(t, pkcs11.CKK_AES, mkv)
			for _, r := range [][]byte{emv.ATC(0x0123, 16), unhex("00112233445566778899aabbccddeeff")} {
				objects := lt.Objects(t)
				sk, err := emv.SessionKey(ctx, lt.Tok, mk, r, scheme.Options{Usage: derive.UseEncrypt})
				require.NoError(t, err, "AES-%d", n*8)
				assert.Equal(t, n, sk.Key.Len)
				assert.Equal(t, n, sk.KeyType.Len())
				assert.Equal(t, 1, sk.Derivations)
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, refAESSessionKey(t, mkv, r)), lt.KCV(t, sk.Key), "AES-%d, R %x", n*8, r)
				require.NoError(t, lt.Tok.Destroy(ctx, sk.Key))
				assert.Equal(t, objects, lt.Objects(t))
			}
		}
	})
}

// TestOptionC: the AES ICC master key (A1.4.3) from AES-128/192/256 issuer
// master keys, for a 16-digit PAN, a 19-digit PAN and an absent PSN,
// against the software reference; then its AES session key.
func TestOptionC(t *testing.T) {
	ctx := context.Background()
	y, err := emv.MasterKeyBlock(emv.OptionC, "5413339000001513", "01")
	require.NoError(t, err)
	assert.Equal(t, "00000000000000541333900000151301", hex.EncodeToString(y), "Y: PAN || PSN left-padded to 16 bytes")
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		for _, n := range []int{16, 24, 32} {
			imkv := unhex(aesKeys[n])
			imk := lt.Base(t, pkcs11.CKK_AES, imkv)
			for _, c := range []struct{ pan, psn string }{{"5413339000001513", "01"}, {"1234567890123456789", "45"}, {"123456789012", ""}} {
				objects := lt.Objects(t)
				mk, err := emv.ICCMasterKey(ctx, lt.Tok, imk, emv.OptionC, c.pan, c.psn, scheme.Options{Usage: derive.UseDerive | derive.UseEncrypt})
				require.NoError(t, err, "AES-%d %s", n*8, c.pan)
				want := refOptionC(t, imkv, c.pan, c.psn)
				assert.Equal(t, n, mk.Key.Len)
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, want), lt.KCV(t, mk.Key), "AES-%d, PAN %s PSN %q", n*8, c.pan, c.psn)
				sk, err := emv.SessionKey(ctx, lt.Tok, mk.Key, emv.ATC(0x001C, 16), scheme.Options{Usage: derive.UseEncrypt})
				require.NoError(t, err)
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, refAESSessionKey(t, want, emv.ATC(0x001C, 16))), lt.KCV(t, sk.Key))
				require.NoError(t, lt.Tok.Destroy(ctx, sk.Key))
				require.NoError(t, lt.Tok.Destroy(ctx, mk.Key))
				assert.Equal(t, objects, lt.Objects(t))
			}
		}
	})
}

// TestRefusals: bad input and unsupported keys are refused before any
// PKCS#11 call, leaving nothing behind.
func TestRefusals(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		imk := lt.Base(t, pkcs11.CKK_DES2, unhex(pyemvIMK))
		aes256 := lt.Base(t, pkcs11.CKK_AES, make([]byte, 32))
		des3 := lt.Base(t, pkcs11.CKK_DES3, unhex("0123456789abcdef23456789abcdef01456789abcdef0123"))
		objects := lt.Objects(t)
		for _, c := range []struct {
			name string
			run  func() error
			want error
		}{
			{"pan too short", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, imk, emv.OptionA, "12345678901", "00", scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
			{"pan not digits", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, imk, emv.OptionA, "1234567890123X", "00", scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
			{"psn of one digit", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, imk, emv.OptionA, "1234567890123456", "1", scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
			{"unknown option", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, imk, 7, "1234567890123456", "01", scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
			{"AES issuer master key", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, aes256, emv.OptionA, "1234567890123456", "01", scheme.Options{})
				return err
			}, derive.ErrKeyType},
			{"session key R of 7 bytes", func() error {
				_, err := emv.SessionKey(ctx, lt.Tok, imk, make([]byte, 7), scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
			{"session key from a triple-length master key", func() error {
				_, err := emv.SessionKey(ctx, lt.Tok, des3, make([]byte, 8), scheme.Options{})
				return err
			}, derive.ErrKeyType},
			{"AES session key R of 8 bytes", func() error {
				_, err := emv.SessionKey(ctx, lt.Tok, aes256, make([]byte, 8), scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
			{"option C from a Triple DES issuer master key", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, imk, emv.OptionC, "1234567890123456", "01", scheme.Options{})
				return err
			}, derive.ErrKeyType},
			{"option C PAN not digits", func() error {
				_, err := emv.ICCMasterKey(ctx, lt.Tok, aes256, emv.OptionC, "12345678901234X", "01", scheme.Options{})
				return err
			}, derive.ErrInvalidInput},
		} {
			t.Run(c.name, func(t *testing.T) {
				err := c.run()
				require.Error(t, err)
				assert.True(t, errors.Is(err, c.want), "%v", err)
				assert.Equal(t, objects, lt.Objects(t))
			})
		}
	})
}
