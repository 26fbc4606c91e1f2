package derive

import (
	"context"
	"crypto/aes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// cmac is AES-CMAC (NIST SP 800-38B), the test's own reference.
func cmac(t testing.TB, key, msg []byte) []byte {
	b, err := aes.NewCipher(key)
	require.NoError(t, err)
	l := make([]byte, 16)
	b.Encrypt(l, l)
	k1, k2 := make([]byte, 16), make([]byte, 16)
	dbl(k1, l)
	dbl(k2, k1)
	n := (len(msg) + 15) / 16
	last := make([]byte, 16)
	if n > 0 && len(msg)%16 == 0 {
		copy(last, msg[(n-1)*16:])
		for i := range last {
			last[i] ^= k1[i]
		}
	} else {
		if n == 0 {
			n = 1
		}
		rest := msg[(n-1)*16:]
		copy(last, rest)
		last[len(rest)] = 0x80
		for i := range last {
			last[i] ^= k2[i]
		}
	}
	x := make([]byte, 16)
	for i := 0; i < n-1; i++ {
		for j := 0; j < 16; j++ {
			x[j] ^= msg[i*16+j]
		}
		b.Encrypt(x, x)
	}
	for j := range x {
		x[j] ^= last[j]
	}
	b.Encrypt(x, x)
	return x
}

// TestCMACReference anchors the test's CMAC to RFC 4493 §4 (= SP 800-38B D.1).
func TestCMACReference(t *testing.T) {
	k := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	assert.Equal(t, "bb1d6929e95937287fa37d129b756746", hex.EncodeToString(cmac(t, k, nil)))
	assert.Equal(t, "070a16b46b4d4144f79bdd9dd04a287c", hex.EncodeToString(cmac(t, k, lab.Unhex("6bc1bee22e409f96e93d7e117393172a"))))
	assert.Equal(t, "dfa66747de9ae63030ca32611497c827", hex.EncodeToString(cmac(t, k, lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411"))))
}

// refSP800108 is SP 800-108 in software, for the default layouts:
// counter K(i) = PRF([i]_32 || data || [L]_32), feedback
// K(i) = PRF(K(i-1) || [i]_32 || data || [L]_32).
func refSP800108(t testing.TB, f SP800108, key, data []byte, n int) []byte {
	prf := func(msg []byte) []byte {
		var h func() hash.Hash
		switch f.PRF {
		case AESCMAC:
			return cmac(t, key, msg)
		case HMACSHA256:
			h = sha256.New
		case HMACSHA384:
			h = sha512.New384
		case HMACSHA512:
			h = sha512.New
		}
		m := hmac.New(h, key)
		m.Write(msg)
		return m.Sum(nil)
	}
	var out, prev []byte
	prev = f.IV
	for i := uint32(1); len(out) < n; i++ {
		var msg []byte
		if f.Mode == SP800108Feedback {
			msg = append(msg, prev...)
		}
		msg = binary.BigEndian.AppendUint32(msg, i)
		msg = append(msg, data...)
		msg = binary.BigEndian.AppendUint32(msg, uint32(n*8))
		prev = prf(msg)
		out = append(out, prev...)
	}
	return out[:n]
}

// kdfTokens are the lab tokens that run the PKCS#11 3.0 KDFs: NSS softoken.
func kdfTokens(t *testing.T) []*labToken {
	var out []*labToken
	for _, lt := range tokens(t) {
		if lt.kind == "nss" {
			out = append(out, lt)
		}
	}
	return out
}

// checkKey compares DK with a reference value, in the token: by check
// value for AES keys, by HMAC for generic secrets.
func assertKeyValue(t *testing.T, lt *labToken, dk *Key, kt KeyType, want []byte) {
	t.Helper()
	if kt.ckk == pkcs11.CKK_GENERIC_SECRET {
		assertHMAC(t, lt, dk, want)
		return
	}
	kcv, err := lt.tok.CheckValue(context.Background(), dk)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(refKCV(t, kt, want)), hex.EncodeToString(kcv))
}

func TestSP800108KnownAnswers(t *testing.T) {
	for _, lt := range kdfTokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			ctx := context.Background()
			hmacKey := lab.Random(t, 32)
			aesKey := lab.Random(t, 16)
			gbase := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, hmacKey)
			abase := lt.importKey(t, pkcs11.CKK_AES, aesKey)
			label := append([]byte("p11derive test"), 0)
			data := append(label, lab.Random(t, 16)...)
			for _, c := range []struct {
				name string
				f    SP800108
				base *Key
				key  []byte
				out  KeyType
			}{
				{"counter/hmac-sha256/aes128", SP800108{Mode: SP800108Counter, PRF: HMACSHA256}, gbase, hmacKey, KeyAES128},
				{"counter/hmac-sha256/generic-80 (3 iterations)", SP800108{Mode: SP800108Counter, PRF: HMACSHA256}, gbase, hmacKey, KeyGeneric(80)},
				{"counter/hmac-sha512/aes256", SP800108{Mode: SP800108Counter, PRF: HMACSHA512}, gbase, hmacKey, KeyAES256},
				{"counter/aes-cmac/aes256 (2 iterations)", SP800108{Mode: SP800108Counter, PRF: AESCMAC}, abase, aesKey, KeyAES256},
				{"feedback/hmac-sha256/generic-64", SP800108{Mode: SP800108Feedback, PRF: HMACSHA256, IV: lab.Random(t, 32)}, gbase, hmacKey, KeyGeneric(64)},
				{"feedback/aes-cmac/aes256", SP800108{Mode: SP800108Feedback, PRF: AESCMAC, IV: lab.Random(t, 16)}, abase, aesKey, KeyAES256},
				{"feedback/hmac-sha384/no iv", SP800108{Mode: SP800108Feedback, PRF: HMACSHA384}, gbase, hmacKey, KeyAES256},
			} {
				t.Run(c.name, func(t *testing.T) {
					objects := lt.objects(t)
					res, err := lt.tok.Derive(ctx, c.base, Request{Function: c.f, Data: data, KeyType: c.out})
					require.NoError(t, err)
					defer lt.tok.Destroy(ctx, res.Key)
					assert.Equal(t, Native, res.Strategy)
					assert.Equal(t, objects+1, lt.objects(t))
					assertKeyValue(t, lt, res.Key, c.out, refSP800108(t, c.f, c.key, data, c.out.n))
					// The profile round-trips.
					p := res.Profile()
					f, err := ParseFunction(p.KDF, p.Params)
					require.NoError(t, err)
					assert.Equal(t, c.f.Name(), f.Name())
					assert.Equal(t, c.f.layout().String(), f.(SP800108).layout().String())
				})
			}
		})
	}
}

func TestHKDFKnownAnswers(t *testing.T) {
	for _, lt := range kdfTokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			ctx := context.Background()
			// RFC 5869 A.1 (test case 1): IKM 22 × 0x0b, salt 00..0c, info f0..f9, L = 42.
			ikm := lab.Unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
			base := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, ikm)
			okm := "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
			ref, err := hkdf.Key(sha256.New, ikm, lab.Unhex("000102030405060708090a0b0c"), string(lab.Unhex("f0f1f2f3f4f5f6f7f8f9")), 42)
			require.NoError(t, err)
			require.Equal(t, okm, hex.EncodeToString(ref), "the reference reproduces RFC 5869 A.1")
			res, err := lt.tok.Derive(ctx, base, Request{Function: HKDF{Hash: SHA256, Salt: lab.Unhex("000102030405060708090a0b0c")},
				Data: lab.Unhex("f0f1f2f3f4f5f6f7f8f9"), KeyType: KeyGeneric(42)})
			require.NoError(t, err)
			defer lt.tok.Destroy(ctx, res.Key)
			assertKeyValue(t, lt, res.Key, KeyGeneric(42), lab.Unhex(okm))

			// RFC 5869 A.3 (test case 3): no salt, no info.
			okm3 := lab.Unhex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
			res3, err := lt.tok.Derive(ctx, base, Request{Function: HKDF{Hash: SHA256}, KeyType: KeyGeneric(42)})
			require.NoError(t, err)
			defer lt.tok.Destroy(ctx, res3.Key)
			assertKeyValue(t, lt, res3.Key, KeyGeneric(42), okm3)

			// Expand-only from a PRK, into an AES key.
			prk := lab.Random(t, 32)
			pbase := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, prk)
			info := []byte("p11derive expand-only")
			want, err := hkdf.Expand(sha256.New, prk, string(info), 16)
			require.NoError(t, err)
			res4, err := lt.tok.Derive(ctx, pbase, Request{Function: HKDF{Hash: SHA256, Mode: HKDFExpandOnly}, Data: info, KeyType: KeyAES128})
			require.NoError(t, err)
			defer lt.tok.Destroy(ctx, res4.Key)
			assertKeyValue(t, lt, res4.Key, KeyAES128, want)
		})
	}
}

func TestSHA256ConcatKnownAnswer(t *testing.T) {
	for _, lt := range kdfTokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			ctx := context.Background()
			key := lab.Random(t, 32)
			base := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, key)
			data := []byte("device-0042")
			objects := lt.objects(t)
			res, err := lt.tok.Derive(ctx, base, Request{Function: SHA256Concat{}, Data: data, KeyType: KeyAES128})
			require.NoError(t, err)
			defer lt.tok.Destroy(ctx, res.Key)
			assert.Equal(t, objects+1, lt.objects(t), "the intermediate K || data was left behind")
			assert.Equal(t, 3+readBack, res.Calls)
			sum := sha256.Sum256(append(append([]byte{}, key...), data...))
			assertKeyValue(t, lt, res.Key, KeyAES128, sum[:16])
		})
	}
}

// TestKDFsRefusedCleanly: SoftHSM2 2.6.1 has no SP 800-108 or HKDF; the
// derivations fail with a clear error and leave nothing behind. Bad
// parameters are refused before any call.
func TestKDFsRefusedCleanly(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		gbase := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, lab.Random(t, 32))
		abase := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
		if lt.kind == "softhsm2" {
			for _, f := range []Function{SP800108{Mode: SP800108Counter, PRF: HMACSHA256}, HKDF{Hash: SHA256}} {
				objects := lt.objects(t)
				_, err := lt.tok.Derive(ctx, gbase, Request{Function: f, Data: []byte("x"), KeyType: KeyAES128})
				require.Error(t, err, f.Name())
				assert.ErrorIs(t, err, ErrUnsupported)
				assert.Equal(t, objects, lt.objects(t))
			}
		}
		for _, c := range []struct {
			name string
			base *Key
			r    Request
			want error
		}{
			{"unknown prf", gbase, Request{Function: SP800108{Mode: SP800108Counter, PRF: 9}, Data: []byte("x"), KeyType: KeyAES128}, ErrInvalidInput},
			{"iv in counter mode", gbase, Request{Function: SP800108{Mode: SP800108Counter, PRF: HMACSHA256, IV: []byte{1}}, Data: []byte("x"), KeyType: KeyAES128}, ErrInvalidInput},
			{"layout without counter", gbase, Request{Function: SP800108{Mode: SP800108Counter, PRF: HMACSHA256, Layout: Layout{{Kind: SegData}}}, Data: []byte("x"), KeyType: KeyAES128}, ErrInvalidInput},
			{"feedback layout without chain", gbase, Request{Function: SP800108{Mode: SP800108Feedback, PRF: HMACSHA256, Layout: Layout{{Kind: SegCounter, Bits: 32}, {Kind: SegData}}}, Data: []byte("x"), KeyType: KeyAES128}, ErrInvalidInput},
			{"cmac prf with a generic key", gbase, Request{Function: SP800108{Mode: SP800108Counter, PRF: AESCMAC}, Data: []byte("x"), KeyType: KeyAES128}, ErrKeyType},
			{"hkdf from an aes key", abase, Request{Function: HKDF{Hash: SHA256}, Data: []byte("x"), KeyType: KeyAES128}, ErrKeyType},
			{"hkdf expand-only with salt", gbase, Request{Function: HKDF{Hash: SHA256, Mode: HKDFExpandOnly, Salt: []byte{1}}, Data: []byte("x"), KeyType: KeyAES128}, ErrInvalidInput},
			{"hkdf too long", gbase, Request{Function: HKDF{Hash: SHA256}, Data: []byte("x"), KeyType: KeyGeneric(255*32 + 1)}, ErrInvalidInput},
			{"sha256-concat longer than 32", gbase, Request{Function: SHA256Concat{}, Data: []byte("x"), KeyType: KeyGeneric(33)}, ErrInvalidInput},
			{"sha256-concat without data", gbase, Request{Function: SHA256Concat{}, KeyType: KeyAES128}, ErrInvalidInput},
		} {
			t.Run(c.name, func(t *testing.T) {
				objects := lt.objects(t)
				calls := lt.tok.calls.Load()
				_, err := lt.tok.Derive(ctx, c.base, c.r)
				assert.ErrorIs(t, err, c.want)
				assert.Equal(t, calls, lt.tok.calls.Load())
				assert.Equal(t, objects, lt.objects(t))
			})
		}
	})
}

func TestLayoutSyntax(t *testing.T) {
	l, err := ParseLayout("counter:8:le, hex:0102 ,data,dkm:16:be")
	require.NoError(t, err)
	assert.Equal(t, "counter:8:le,hex:0102,data,dkm:16", l.String())
	for _, bad := range []string{"counter", "counter:x", "dkm:16:middle", "hex:zz", "hex:", "data:1", "frob"} {
		_, err := ParseLayout(bad)
		assert.ErrorIs(t, err, ErrInvalidInput, bad)
	}
	f, err := ParseFunction("sp800-108-counter", map[string]string{"prf": "aes-cmac", "layout": "hex:01,counter:8,data"})
	require.NoError(t, err)
	assert.Equal(t, AESCMAC, f.(SP800108).PRF)
	_, err = ParseFunction("sp800-108-counter", map[string]string{"salt": "00"})
	assert.ErrorIs(t, err, ErrInvalidInput, "unknown parameters are refused")
}

// TestSP800108CAVP reproduces a published NIST CAVP vector through the
// token: KDFCTR_gen.txt, [PRF=CMAC_AES128] [CTRLOCATION=BEFORE_FIXED]
// [RLEN=8_BITS], COUNT=0, L=128. The fixed input data holds L already, so
// the layout is the 8-bit counter then the data.
func TestSP800108CAVP(t *testing.T) {
	for _, lt := range kdfTokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			ctx := context.Background()
			base := lt.importKey(t, pkcs11.CKK_AES, lab.Unhex("dff1e50ac0b69dc40f1051d46c2b069c"))
			layout, err := ParseLayout("counter:8,data")
			require.NoError(t, err)
			res, err := lt.tok.Derive(ctx, base, Request{
				Function: SP800108{Mode: SP800108Counter, PRF: AESCMAC, Layout: layout},
				Data:     lab.Unhex("c16e6e02c5a3dcc8d78b9ac1306877761310455b4e41469951d9e6c2245a064b33fd8c3b01203a7824485bf0a64060c4648b707d2607935699316ea5"),
				KeyType:  KeyAES128,
			})
			require.NoError(t, err)
			defer lt.tok.Destroy(ctx, res.Key)
			assertKeyValue(t, lt, res.Key, KeyAES128, lab.Unhex("8be8f0869b3c0ba97b71863d1b9f7813"))
		})
	}
}
