package main

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// TestChoose runs the program on tokens and base keys that call for
// different strategies; whichever runs, DK is the same key (its check value
// is that of AES_K(data), computed by Go's crypto/aes).
func TestChoose(t *testing.T) {
	k, _ := hex.DecodeString("2b7e151628aed2a6abf7158809cf4f3c")
	data := "6bc1bee22e409f96e93d7e117393172a"
	kcv := "6d60f8" // of DK = 3ad77bb4... (SP 800-38A F.1.1)
	b, _ := aes.NewCipher(k)
	dk, _ := hex.DecodeString(data)
	b.Encrypt(dk, dk)
	require.Equal(t, "3ad77bb40d7a3660a89ecaf32466ef97", hex.EncodeToString(dk))

	noDerive := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false)}
	for _, c := range []struct {
		name   string
		tok    func(testing.TB) *lab.Token
		attrs  []*pkcs11.Attribute
		avoid  string
		chosen string
		lines  []string
	}{
		{"softhsm2", lab.SharedSoftHSM2, nil, "", "native", []string{"native             1  yes"}},
		// The NSS key database slot runs *_ENCRYPT_DATA without listing it:
		// the listed strategy wins, unless the policy forbids it.
		// NSS lists CKM_AES_CTR, and refuses it for C_UnwrapKey: the next one.
		{"nssdb", lab.NSSDB, nil, "", "mac-unwrap", []string{
			"native             1  the token does not list CKM_AES_ECB_ENCRYPT_DATA",
			"stream-unwrap      1  the token lists CKM_AES_CTR without CKF_UNWRAP"}},
		{"nssdb-avoid", lab.NSSDB, nil, "mac-unwrap,cmac-unwrap,stream-unwrap", "native", nil},
		// A key that may not derive: the MAC-and-unwrap trick.
		{"nss-noderive", lab.NSS, noDerive, "", "mac-unwrap", []string{"CKM_AES_ECB_ENCRYPT_DATA needs CKA_DERIVE on the base key"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			lt := c.tok(t)
			ctx, s := lab.Open(t, lt)
			label := lab.UniqueLabel("K-" + c.name)
			lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, k, label, c.attrs...)
			if lt.Login {
				t.Setenv("P11DERIVE_PIN", lt.PIN)
			}
			var out bytes.Buffer
			require.NoError(t, run([]string{"--module", lt.Module, "--init-args", lt.InitArgs, "--slot", fmt.Sprint(lt.SlotID),
				"--key", label, "--data", data, "--avoid", c.avoid}, &out), out.String())
			t.Log("\n" + out.String())
			assert.Contains(t, out.String(), "chosen: "+c.chosen+"\n")
			assert.Contains(t, out.String(), fmt.Sprintf("DK: aes-ecb by %s in ", c.chosen))
			assert.Contains(t, out.String(), "check value "+kcv)
			for _, l := range c.lines {
				assert.Contains(t, out.String(), l)
			}
		})
	}
}
