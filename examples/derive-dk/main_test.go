package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// TestDeriveDK runs the program on SoftHSM2 and NSS softoken with a
// non-extractable K of known value, and checks DK by its check value
// against Go's crypto/aes (DK = AES_K(data)).
func TestDeriveDK(t *testing.T) {
	k := make([]byte, 16)
	for i := range k {
		k[i] = byte(i * 7)
	}
	data, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	dk := make([]byte, 16)
	b, _ := aes.NewCipher(k)
	b.Encrypt(dk, data)
	kb, _ := aes.NewCipher(dk)
	kcv := make([]byte, 16)
	kb.Encrypt(kcv, kcv)

	for _, lt := range []*lab.Token{lab.SharedSoftHSM2(t), lab.NSS(t)} {
		t.Run(lt.Kind, func(t *testing.T) {
			ctx, s := lab.Open(t, lt)
			label := lab.UniqueLabel("K-" + lt.Kind)
			lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, k, label,
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true))
			if lt.Login {
				t.Setenv("P11DERIVE_PIN", lt.PIN)
			}
			var out bytes.Buffer
			err := run([]string{"--module", lt.Module, "--init-args", lt.InitArgs, "--slot", fmt.Sprint(lt.SlotID),
				"--key", label, "--data", hex.EncodeToString(data)}, &out)
			require.NoError(t, err, out.String())
			t.Log("\n" + out.String())
			assert.Contains(t, out.String(), "sensitive=true extractable=false\n")
			assert.Contains(t, out.String(), "DK: aes-ecb by native")
			assert.Contains(t, out.String(), "DK: sensitive=true extractable=false token-object=false")
			assert.Contains(t, out.String(), fmt.Sprintf("DK: check value %x\n", kcv[:3]))
		})
	}
}

// TestKeep keeps DK in the token, where a later Token finds it.
func TestKeep(t *testing.T) {
	lt := lab.SharedSoftHSM2(t)
	ctx, s := lab.Open(t, lt)
	label := lab.UniqueLabel("K-keep")
	lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, make([]byte, 16), label, pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
	t.Setenv("P11DERIVE_PIN", lt.PIN)
	var out bytes.Buffer
	dkLabel := label + "-dk"
	require.NoError(t, run([]string{"--module", lt.Module, "--slot", fmt.Sprint(lt.SlotID), "--key", label,
		"--data", "0102030405060708090a0b0c0d0e0f10", "--label", dkLabel, "--keep"}, &out))
	assert.Contains(t, out.String(), "token-object=true")

	tok := labtok.Open(t, lt.Kind, lt).Tok
	dk, err := tok.FindKey(context.Background(), dkLabel)
	require.NoError(t, err)
	assert.True(t, dk.Token && dk.Sensitive && !dk.Extractable)
	require.NoError(t, tok.Destroy(context.Background(), dk))
}

func TestBadInput(t *testing.T) {
	assert.ErrorContains(t, run([]string{"--data", "xyz"}, new(bytes.Buffer)), "--data")
	assert.ErrorContains(t, run([]string{"--data", "00"}, new(bytes.Buffer)), "no PKCS#11 module")
}
