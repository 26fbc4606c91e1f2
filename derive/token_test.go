package derive

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

func TestSelection(t *testing.T) {
	slot := uint(7)
	for _, c := range []struct {
		name string
		cfg  Config
		want selector
		mod  string
		err  string
	}{
		{"label", Config{Module: "m.so", Label: "pay"}, selector{label: "pay"}, "m.so", ""},
		{"uri token+serial", Config{Module: "m.so", URI: "pkcs11:token=My%20Token;serial=0042"}, selector{label: "My Token", serial: "0042"}, "m.so", ""},
		{"uri slot", Config{Module: "m.so", URI: "pkcs11:slot-id=7"}, selector{slot: &slot}, "m.so", ""},
		{"uri manufacturer+model", Config{Module: "m.so", URI: "pkcs11:manufacturer=ACME;model=HSM%201"}, selector{manufacturer: "ACME", model: "HSM 1"}, "m.so", ""},
		{"uri module-path", Config{URI: "pkcs11:token=x?module-path=/usr/lib/x.so"}, selector{label: "x"}, "/usr/lib/x.so", ""},
		{"uri agrees with label", Config{Module: "m.so", Label: "x", URI: "pkcs11:token=x"}, selector{label: "x"}, "m.so", ""},
		{"uri conflicts with label", Config{Module: "m.so", Label: "y", URI: "pkcs11:token=x"}, selector{}, "", "conflicts"},
		{"uri conflicts with slot", Config{Module: "m.so", Slot: &slot, URI: "pkcs11:slot-id=8"}, selector{}, "", "conflicts"},
		{"uri bad slot", Config{Module: "m.so", URI: "pkcs11:slot-id=seven"}, selector{}, "", "number"},
		{"uri pin-value", Config{Module: "m.so", URI: "pkcs11:token=x?pin-value=1234"}, selector{}, "", "PIN in the URI"},
		{"uri pin-source", Config{Module: "m.so", URI: "pkcs11:token=x?pin-source=file:/p"}, selector{}, "", "pin-source"},
		{"not a uri", Config{Module: "m.so", URI: "http://x"}, selector{}, "", "uri"},
		{"no module", Config{Label: "x"}, selector{}, "", "no PKCS#11 module"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, mod, err := selection(c.cfg)
			if c.err != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrInvalidInput)
				assert.Contains(t, err.Error(), c.err)
				assert.NotContains(t, err.Error(), "1234", "a PIN must never appear in an error")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
			assert.Equal(t, c.mod, mod)
		})
	}
}

func ptr(u uint) *uint { return &u }

// TestReadOnly opens read-only sessions: session keys derive, persistent
// ones are refused before any call.
func TestReadOnly(t *testing.T) {
	for _, lt := range tokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			cfg := Config{Module: lt.lab.Module, Slot: ptr(lt.tok.SlotID()), ReadOnly: true}
			if lt.lab.Login {
				cfg.PIN = lt.lab.PIN
			}
			tok, err := Open(cfg)
			require.NoError(t, err)
			defer tok.Close()
			ctx := context.Background()
			base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
			res, err := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
			require.NoError(t, err)
			require.NoError(t, tok.Destroy(ctx, res.Key))
			require.NoError(t, withSession(tok, func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error {
				info, err := c.GetSessionInfo(s)
				if err == nil {
					assert.Zero(t, info.Flags&pkcs11.CKF_RW_SESSION, "a read-write session")
				}
				return err
			}))
			_, err = tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128, Label: "x", Persistent: true})
			assert.ErrorIs(t, err, ErrInvalidInput)
		})
	}
}
