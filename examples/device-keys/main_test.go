package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/kwref"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// TestDeviceKeys runs the program on SoftHSM2 and NSS softoken with master
// and transport keys of known value. Each wrapped key must be the RFC 3394
// wrap of the expected device key (software reference), and must unwrap
// back into the token (C_UnwrapKey with the transport key) into a key with
// the program's check value. No device key is left in the token.
func TestDeviceKeys(t *testing.T) {
	master, _ := hex.DecodeString("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")
	kek, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	uids := []string{"04a1b2c3d4e5f6", "04a1b2c3d4e5f7", "0102030405060708090a0b0c0d0e0f"}

	for _, lt := range []*lab.Token{lab.SharedSoftHSM2(t), lab.NSS(t)} {
		t.Run(lt.Kind, func(t *testing.T) {
			ctx, s := lab.Open(t, lt)
			ml, tl := lab.UniqueLabel("M-"+lt.Kind), lab.UniqueLabel("T-"+lt.Kind)
			lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, master, ml, pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
			lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, kek, tl, pkcs11.NewAttribute(pkcs11.CKA_WRAP, true))
			before := lab.CountObjects(t, ctx, s)
			if lt.Login {
				t.Setenv("P11DERIVE_PIN", lt.PIN)
			}
			var out bytes.Buffer
			require.NoError(t, run(append([]string{"--module", lt.Module, "--init-args", lt.InitArgs, "--slot", fmt.Sprint(lt.SlotID),
				"--master", ml, "--transport", tl}, uids...), &out))
			t.Log("\n" + out.String())
			assert.Equal(t, before, lab.CountObjects(t, ctx, s), "every device key destroyed")

			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			require.Len(t, lines, 1+len(uids))
			assert.Equal(t, "uid,wrapped,kcv", lines[0])
			mb, _ := aes.NewCipher(master)
			tok := labtok.Open(t, lt.Kind, lt).Tok
			transport, err := tok.FindKey(context.Background(), tl)
			require.NoError(t, err)
			for i, line := range lines[1:] {
				f := strings.Split(line, ",")
				require.Len(t, f, 3)
				assert.Equal(t, uids[i], f[0])
				uid, _ := hex.DecodeString(uids[i])
				data, _ := block(uid)
				dk := make([]byte, 16)
				mb.Encrypt(dk, data)
				want, err := kwref.Wrap(kek, kwref.IV, dk)
				require.NoError(t, err)
				assert.Equal(t, hex.EncodeToString(want), f[1], uids[i])

				// The device's side of the transport key: unwrap, compare.
				wrapped, _ := hex.DecodeString(f[1])
				k, err := tok.Unwrap(context.Background(), transport, ckmAESKeyWrap, nil, wrapped,
					derive.KeySpec{Type: derive.KeyAES128, Usage: derive.UseEncrypt})
				require.NoError(t, err)
				kcv, err := tok.CheckValue(context.Background(), k)
				require.NoError(t, err)
				require.NoError(t, tok.Destroy(context.Background(), k))
				assert.Equal(t, f[2], hex.EncodeToString(kcv), uids[i])
			}
		})
	}
}

func TestBlock(t *testing.T) {
	b, err := block([]byte{4, 0xa1})
	require.NoError(t, err)
	assert.Equal(t, "04a18000000000000000000000000000", hex.EncodeToString(b))
	_, err = block(make([]byte, 16))
	assert.Error(t, err)
}
