package main

import (
	"bytes"
	"crypto/des"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

func TestOptionA(t *testing.T) {
	for _, c := range []struct{ pan, psn, y string }{
		{"5413330089600010", "01", "1333008960001001"}, // 18 digits: the rightmost 16
		{"5413330089600010", "", "1333008960001000"},   // no PSN: 00
		{"476173900101", "02", "0047617390010102"},     // 14 digits: zeros on the left
		{"4761739001010119", "00", "6173900101011900"},
	} {
		data, err := optionA(c.pan, c.psn)
		require.NoError(t, err, c.pan)
		assert.Equal(t, c.y, hex.EncodeToString(data[:8]), c.pan)
		for i := range 8 {
			assert.Equal(t, ^data[i], data[8+i])
		}
	}
	for _, bad := range [][2]string{{"54133300896000a0", "01"}, {"12345", "01"}, {"5413330089600010", "1"}} {
		_, err := optionA(bad[0], bad[1])
		assert.Error(t, err, bad)
	}
}

// TestCardKey runs the program with an IMK of known value on SoftHSM2 and
// NSS softoken, and compares the card key's check value with the software
// computation of option A (Go's crypto/des).
func TestCardKey(t *testing.T) {
	imk, _ := hex.DecodeString("0123456789abcdeffedcba9876543210")
	pan, psn := "5413330089600010", "01"
	data, err := optionA(pan, psn)
	require.NoError(t, err)
	b, _ := des.NewTripleDESCipher(append(append([]byte{}, imk...), imk[:8]...))
	mk := make([]byte, 16)
	b.Encrypt(mk[:8], data[:8])
	b.Encrypt(mk[8:], data[8:])
	mb, _ := des.NewTripleDESCipher(append(append([]byte{}, mk...), mk[:8]...))
	kcv := make([]byte, 8)
	mb.Encrypt(kcv, kcv) // parity bits do not enter DES: the token's parity-adjusted key gives the same

	for _, lt := range []*lab.Token{lab.SharedSoftHSM2(t), lab.NSS(t)} {
		t.Run(lt.Kind, func(t *testing.T) {
			ctx, s := lab.Open(t, lt)
			label := lab.UniqueLabel("IMK-" + lt.Kind)
			lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_DES2, imk, label, pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
			if lt.Login {
				t.Setenv("P11DERIVE_PIN", lt.PIN)
			}
			var out bytes.Buffer
			require.NoError(t, run([]string{"--module", lt.Module, "--init-args", lt.InitArgs, "--slot", fmt.Sprint(lt.SlotID),
				"--imk", label, "--pan", pan, "--psn", psn}, &out), out.String())
			t.Log("\n" + out.String())
			assert.Contains(t, out.String(), "Y = 1333008960001001")
			assert.Contains(t, out.String(), "des3-ecb by native, sensitive=true extractable=false")
			assert.Contains(t, out.String(), "check value "+strings.ToUpper(hex.EncodeToString(kcv[:3])))
		})
	}
}
