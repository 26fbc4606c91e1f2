package derive

import (
	"context"
	"fmt"
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

func TestOpenSelectsTokens(t *testing.T) {
	for _, lt := range tokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			info := lt.tok.Info()
			// By label alone, by URI, by serial: the same slot.
			for _, cfg := range []Config{
				{Module: lt.lab.Module, Label: info.Label},
				{Module: lt.lab.Module, URI: "pkcs11:slot-id=" + itoa(lt.tok.SlotID())},
				{Module: lt.lab.Module, Serial: info.SerialNumber, Slot: ptr(lt.tok.SlotID())},
			} {
				if lt.lab.Login {
					cfg.PIN = lt.lab.PIN
				}
				tok, err := Open(cfg)
				require.NoError(t, err)
				assert.Equal(t, lt.tok.SlotID(), tok.SlotID())
				require.NoError(t, tok.Close())
			}
			_, err := Open(Config{Module: lt.lab.Module, Label: "no such token"})
			assert.ErrorIs(t, err, ErrNotFound)
		})
	}
	// NSS softoken has two tokens: no selection is ambiguous.
	nss := tokens(t)[1]
	_, err := Open(Config{Module: nss.lab.Module})
	assert.ErrorIs(t, err, ErrAmbiguous)
	_, err = Open(Config{Module: "/nonexistent/libnothing.so"})
	assert.ErrorIs(t, err, ErrNotFound)
	// A closed Token refuses work.
	tok, err := Open(Config{Module: nss.lab.Module, Slot: ptr(nss.tok.SlotID())})
	require.NoError(t, err)
	require.NoError(t, tok.Close())
	_, err = tok.FindKey(context.Background(), "x")
	assert.ErrorIs(t, err, ErrClosed)
}

// TestWrongPIN uses a module nobody in this process logged in to yet: a
// module that is logged in answers CKR_USER_ALREADY_LOGGED_IN to any PIN,
// since PKCS#11 login state belongs to the application, not to a session.
func TestWrongPIN(t *testing.T) {
	lt := lab.SoftHSM2(t)
	lt.Setenv(t)
	_, err := Open(Config{Module: lt.Module, Slot: ptr(lt.SlotID), PIN: "0000-wrong"})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrToken)
	assert.Contains(t, err.Error(), "CKR_PIN_INCORRECT")
	assert.NotContains(t, err.Error(), "0000-wrong")
}

func ptr(u uint) *uint { return &u }

func itoa(u uint) string {
	if u == 0 {
		return "0"
	}
	var b []byte
	for ; u > 0; u /= 10 {
		b = append([]byte{byte('0' + u%10)}, b...)
	}
	return string(b)
}

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
			base := lt.importKey(t, pkcs11.CKK_AES, randomBytes(t, 16))
			res, err := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: randomBytes(t, 16), KeyType: KeyAES128})
			require.NoError(t, err)
			require.NoError(t, tok.Destroy(ctx, res.Key))
			require.NoError(t, withSession(tok, func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error {
				info, err := c.GetSessionInfo(s)
				if err == nil {
					assert.Zero(t, info.Flags&pkcs11.CKF_RW_SESSION, "a read-write session")
				}
				return err
			}))
			_, err = tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: randomBytes(t, 16), KeyType: KeyAES128, Label: "x", Persistent: true})
			assert.ErrorIs(t, err, ErrInvalidInput)
		})
	}
}

// TestSetLabelAndHandles: SetLabel relabels a key in one call, and Handles
// finds it under its new label only, on each token; bad input is refused
// before any call.
func TestSetLabelAndHandles(t *testing.T) {
	for _, lt := range tokens(t) {
		t.Run(lt.kind, func(t *testing.T) {
			ctx := context.Background()
			k := lt.importKey(t, pkcs11.CKK_AES, randomBytes(t, 16))
			old := fmt.Sprintf("setlabel-old-%s-%d", lt.kind, k.Handle)
			require.NoError(t, lt.tok.SetLabel(ctx, k, old))
			hs, err := lt.tok.Handles(ctx, Selector{Label: old}, 0)
			require.NoError(t, err)
			assert.Equal(t, []pkcs11.ObjectHandle{k.Handle}, hs)
			require.NoError(t, lt.tok.SetLabel(ctx, k, old+"-new"))
			assert.Equal(t, old+"-new", k.Label)
			hs, err = lt.tok.Handles(ctx, Selector{Label: old}, 0)
			require.NoError(t, err)
			assert.Empty(t, hs)
			hs, err = lt.tok.Handles(ctx, Selector{Label: old + "-new"}, 2)
			require.NoError(t, err)
			assert.Equal(t, []pkcs11.ObjectHandle{k.Handle}, hs)
			got, err := lt.tok.Key(ctx, k.Handle)
			require.NoError(t, err)
			assert.Equal(t, old+"-new", got.Label)

			assert.ErrorIs(t, lt.tok.SetLabel(ctx, k, ""), ErrInvalidInput)
			assert.ErrorIs(t, lt.tok.SetLabel(ctx, nil, "x"), ErrInvalidInput)
			_, err = lt.tok.Handles(ctx, Selector{}, 0)
			assert.ErrorIs(t, err, ErrInvalidInput)
		})
	}
}
