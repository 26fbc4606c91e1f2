package gp_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/gp"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/labtok"
)

// Card key diversification vectors published by GlobalPlatformPro
// (github.com/martinpaljak/GlobalPlatformPro,
// library/src/test/java/pro/javacard/gp/test/TestPlaintextKeys.java):
// master keys 4041…, KDD 00010203040506070809, the diversified keys given
// by their check values — for the Triple DES keys the first 3 bytes of
// DES3(K)[0^8], for the AES keys GlobalPlatform's (Amendment D): the
// first 3 bytes of AES(K)[01^16].
const gpKDD = "00010203040506070809"

var divVectors = []struct {
	test          string
	method        gp.Method
	master        string
	kdd           string
	enc, mac, dek string // check values
	encKey        string // the ENC key in full, where published
}{
	{test: "testDiversification_EMV_SCP02", method: gp.MethodEMV, master: gpDefaultKey, kdd: gpKDD,
		enc: "c33013", mac: "6f4ca6", dek: "bb8179"},
	{test: "testDiversification_VISA2_SCP02", method: gp.MethodVISA2, master: gpDefaultKey, kdd: gpKDD,
		enc: "2be598", mac: "58da38", dek: "3c328e"},
	{test: "testDiversification_KDF3_SCP03_AES128", method: gp.MethodKDF3, master: gpDefaultKey, kdd: gpKDD,
		enc: "e79c05", mac: "d1bd77", dek: "3fde8c"},
	{test: "testDiversification_KDF3_SCP03_AES192", method: gp.MethodKDF3, master: "404142434445464748494A4B4C4D4E4F5051525354555657", kdd: gpKDD,
		enc: "1de8ea", mac: "47c00c", dek: "c04d76"},
	{test: "testDiversification_KDF3_SCP03_AES256", method: gp.MethodKDF3, master: "404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F", kdd: gpKDD,
		enc: "2972d2", mac: "036f94", dek: "5d57b8"},
	{test: "testDiversification_KDF3_ExternalVector", method: gp.MethodKDF3, master: "8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD", kdd: "D9B1DE5D0362DEDCE4FB",
		encKey: "9AAC5D0B3601F89438A0D9D0B6B256CFB47E6462DFA5228D3420C4AC7C224781"},
}

// refDiversify is the method in software, from the data the package
// builds: DES3-ECB (emv, visa2) or the counter-mode KDF with AES-CMAC
// (kdf3). TestDiversifyReference anchors it to the published vectors, so
// that the data itself is checked, not only the token's arithmetic.
func refDiversify(t *testing.T, m gp.Method, master []byte, k gp.StaticKey, kdd []byte) []byte {
	data, err := gp.DiversificationData(m, k, kdd)
	require.NoError(t, err)
	if m != gp.MethodKDF3 {
		return schemetest.ECB(schemetest.Block(t, pkcs11.CKK_DES2, master), data)
	}
	b := schemetest.Block(t, pkcs11.CKK_AES, master)
	var out []byte
	for i := byte(1); len(out) < len(master); i++ {
		out = append(out, schemetest.CMAC(b, append([]byte{i}, data...))...)
	}
	return out[:len(master)]
}

// gpKCV is a published check value's convention for the key type.
func gpKCV(t *testing.T, ckk uint, v []byte) string {
	if ckk != pkcs11.CKK_AES {
		return schemetest.RefKCV(t, ckk, v)
	}
	out := schemetest.ECB(schemetest.Block(t, ckk, v), bytes.Repeat([]byte{1}, 16))
	return hex.EncodeToString(out[:3])
}

func TestDiversifyReference(t *testing.T) {
	for _, v := range divVectors {
		ckk := uint(pkcs11.CKK_DES2)
		if v.method == gp.MethodKDF3 {
			ckk = pkcs11.CKK_AES
		}
		for i, want := range []string{v.enc, v.mac, v.dek} {
			key := refDiversify(t, v.method, unhex(v.master), gp.StaticKeys[i], unhex(v.kdd))
			if want != "" {
				assert.Equal(t, want, gpKCV(t, ckk, key), "%s %v", v.test, gp.StaticKeys[i])
			}
			if i == 0 && v.encKey != "" {
				assert.Equal(t, unhex(v.encKey), key, v.test)
			}
		}
	}
}

// TestDiversifyPublishedVectors: the three static keys of each vector,
// derived inside every lab token, have the published check values (the
// AES ones computed in the token by its own AES-ECB of the '01' block);
// kdf3 is refused cleanly where the token has no SP 800-108 KDF.
func TestDiversifyPublishedVectors(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		for _, v := range divVectors {
			t.Run(v.test, func(t *testing.T) {
				ckk := uint(pkcs11.CKK_DES2)
				if v.method == gp.MethodKDF3 {
					ckk = pkcs11.CKK_AES
				}
				master := lt.Base(t, ckk, unhex(v.master))
				objects := lt.Objects(t)
				o := scheme.Options{Usage: derive.UseDerive | derive.UseEncrypt}
				keys, err := gp.DiversifyKeys(ctx, lt.Tok, master, v.method, unhex(v.kdd), [3]scheme.Options{o, o, o})
				// SoftHSM2 2.6.1 has no SP 800-108 KDF.
				if v.method == gp.MethodKDF3 && lt.Kind == "softhsm2" {
					require.ErrorIs(t, err, derive.ErrUnsupported)
					assert.Equal(t, objects, lt.Objects(t), "nothing left behind")
					return
				}
				require.NoError(t, err)
				require.Len(t, keys, 3)
				assert.Equal(t, objects+3, lt.Objects(t))
				for i, want := range []string{v.enc, v.mac, v.dek} {
					k := keys[i]
					assert.Equal(t, len(unhex(v.master)), k.Key.Len)
					var got string
					if ckk == pkcs11.CKK_AES {
						got = hex.EncodeToString(lt.Encrypt(t, k.Key, pkcs11.CKM_AES_ECB, bytes.Repeat([]byte{1}, 16))[:3])
					} else {
						got = lt.KCV(t, k.Key)
						assert.Equal(t, derive.KeyDES2, k.KeyType)
					}
					if want != "" {
						assert.Equal(t, want, got, "%v", gp.StaticKeys[i])
					}
					if i == 0 && v.encKey != "" {
						assert.Equal(t, schemetest.RefKCV(t, ckk, unhex(v.encKey)), lt.KCV(t, k.Key), "the published ENC key")
					}
					t.Logf("%s: %v: strategy %s, %d calls", lt.Kind, gp.StaticKeys[i], k.Strategy, k.Calls)
					require.NoError(t, lt.Tok.Destroy(ctx, k.Key))
				}
				assert.Equal(t, objects, lt.Objects(t))
			})
		}
	})
}

// TestDiversifyRefusals: bad input and key types are refused before any
// PKCS#11 call, leaving nothing behind.
func TestDiversifyRefusals(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		des2 := lt.Base(t, pkcs11.CKK_DES2, unhex(gpDefaultKey))
		aes := lt.Base(t, pkcs11.CKK_AES, unhex(gpDefaultKey))
		objects := lt.Objects(t)
		for _, c := range []struct {
			name   string
			master *derive.Key
			m      gp.Method
			kdd    string
			want   error
		}{
			{"KDD of 9 bytes", des2, gp.MethodEMV, "000102030405060708", derive.ErrInvalidInput},
			{"KDD of 11 bytes", aes, gp.MethodKDF3, "0001020304050607080910", derive.ErrInvalidInput},
			{"unknown method", des2, gp.Method(9), gpKDD, derive.ErrInvalidInput},
			{"emv from an AES key", aes, gp.MethodEMV, gpKDD, derive.ErrKeyType},
			{"kdf3 from a DES key", des2, gp.MethodKDF3, gpKDD, derive.ErrKeyType},
		} {
			t.Run(c.name, func(t *testing.T) {
				_, err := gp.DiversifyKeys(ctx, lt.Tok, c.master, c.m, unhex(c.kdd), [3]scheme.Options{})
				require.ErrorIs(t, err, c.want)
				assert.Equal(t, objects, lt.Objects(t))
			})
		}
	})
}
