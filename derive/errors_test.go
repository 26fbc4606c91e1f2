package derive

import (
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
)

// TestTokenErrorCKRText: a CKR code the pkcs11 package names is printed
// with its name; one it does not know (a vendor's, or garbage) in hex and
// said to be unknown, never as a bare "pkcs11: 0x…: ". The error still
// matches the code.
func TestTokenErrorCKRText(t *testing.T) {
	known := &TokenError{Step: "log in", Call: "C_Login", Err: pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)}
	assert.Equal(t, "p11derive: log in: C_Login: pkcs11: 0xA0: CKR_PIN_INCORRECT", known.Error())

	for _, code := range []uint{0xFFFFFFFFFFFFFFFF, 0x80001234} {
		e := &TokenError{Step: "derive DK", Call: "C_DeriveKey", Err: pkcs11.Error(code)}
		assert.Contains(t, e.Error(), "C_DeriveKey: CKR 0x")
		assert.Contains(t, e.Error(), "(unknown: not a PKCS#11 3.0 return value)")
		assert.NotRegexp(t, `: $`, e.Error())
		assert.True(t, errors.Is(e, pkcs11.Error(code)))
		assert.Equal(t, code, e.CKR())
	}
	assert.Equal(t, "p11derive: derive DK: C_DeriveKey: CKR 0xFFFFFFFFFFFFFFFF (unknown: not a PKCS#11 3.0 return value)",
		(&TokenError{Step: "derive DK", Call: "C_DeriveKey", Err: pkcs11.Error(0xFFFFFFFFFFFFFFFF)}).Error())
}
