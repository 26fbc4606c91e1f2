package derive

import (
	"strings"
	"testing"
)

// fuzzPIN is a PIN that must never come back in an error.
const fuzzPIN = "Zq8-PIN-7c1e"

// FuzzSelection reads arbitrary PKCS#11 URIs with the token flags (label,
// serial, slot): no panic, errors are input errors, explicit flags are never
// overridden (a conflicting URI is an error), and a URI carrying a PIN is
// refused without the PIN in the error. It never loads a module: selection
// only reads the configuration.
func FuzzSelection(f *testing.F) {
	for _, c := range []struct {
		uri, label, serial string
		slot               uint16
		useSlot            bool
	}{
		{"pkcs11:token=My%20Token;serial=0042", "", "", 0, false},
		{"pkcs11:slot-id=7", "", "", 7, true},
		{"pkcs11:slot-id=7", "", "", 8, true},
		{"pkcs11:manufacturer=ACME;model=HSM%201", "", "", 0, false},
		{"pkcs11:token=x?module-path=/nonexistent/x.so", "x", "", 0, false},
		{"pkcs11:token=x", "y", "", 0, false},
		{"pkcs11:token=x?pin-value=1234", "", "", 0, false},
		{"pkcs11:token=x?pin-source=file:/p", "", "", 0, false},
		{"pkcs11:slot-id=seven", "", "", 0, false},
		{"pkcs11:id=%01%02;object=k;type=secret-key", "", "", 0, false},
		{"http://x", "", "", 0, false},
		{"", "pay", "0042", 3, true},
	} {
		f.Add(c.uri, c.label, c.serial, c.slot, c.useSlot)
	}
	f.Fuzz(func(t *testing.T, uri, label, serial string, slot uint16, useSlot bool) {
		cfg := Config{Module: "/nonexistent/p11derive-fuzz.so", URI: uri, Label: label, Serial: serial}
		if useSlot {
			s := uint(slot)
			cfg.Slot = &s
		}
		sel, mod, err := selection(cfg)
		_ = sel.String()
		if err != nil {
			requireInvalidInput(t, err)
		} else {
			if mod == "" {
				t.Fatal("no module, no error")
			}
			if label != "" && sel.label != label || serial != "" && sel.serial != serial {
				t.Fatalf("the URI %q overrode the flags: %+v", uri, sel)
			}
			if useSlot && (sel.slot == nil || *sel.slot != uint(slot)) {
				t.Fatalf("the URI %q overrode slot %d", uri, slot)
			}
		}

		// The same URI with a PIN in it: refused, and the PIN is not in
		// the error.
		if strings.Contains(uri+label+serial, fuzzPIN) || !strings.HasPrefix(uri, "pkcs11:") {
			return
		}
		withPIN := uri + "?pin-value=" + fuzzPIN
		if strings.Contains(uri, "?") {
			withPIN = uri + "&pin-value=" + fuzzPIN
		}
		cfg.URI = withPIN
		if _, _, err := selection(cfg); err == nil {
			t.Fatalf("%q: a PIN in the URI was accepted", withPIN)
		} else if strings.Contains(err.Error(), fuzzPIN) {
			t.Fatalf("%q: the PIN is in the error: %v", withPIN, err)
		}
	})
}
