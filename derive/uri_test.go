package derive

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseURI(t *testing.T) {
	slot := uint(3)
	for _, c := range []struct {
		name, uri string
		want      *URI
		err       string
	}{
		{"token and key", "pkcs11:token=My%20Token;object=My%20Key;id=%01%a2;type=secret-key",
			&URI{Token: "My Token", Key: Selector{Label: "My Key", ID: []byte{0x01, 0xa2}}}, ""},
		{"id only", "pkcs11:slot-id=3;id=%00%ff", &URI{Slot: &slot, Key: Selector{ID: []byte{0x00, 0xff}}}, ""},
		{"module", "pkcs11:serial=42?module-path=/x%20y.so", &URI{Serial: "42", ModulePath: "/x y.so"}, ""},
		{"no attributes", "pkcs11:", &URI{}, ""},
		{"unknown path attribute", "pkcs11:token=x;colour=blue", nil, `unknown path attribute "colour"`},
		{"vendor attribute", "pkcs11:token=x;x-vendor=1", nil, `unknown path attribute "x-vendor"`},
		{"unknown query attribute", "pkcs11:token=x?frob=1", nil, `unknown query attribute "frob"`},
		{"query attribute in the path", "pkcs11:module-path=/x.so", nil, `"module-path" is a query attribute in the URI's path`},
		{"path attribute in the query", "pkcs11:?object=k", nil, `"object" is a path attribute in the URI's query`},
		{"unsupported", "pkcs11:slot-description=x", nil, "slot-description is not supported"},
		{"module-name", "pkcs11:?module-name=softhsm2", nil, "module-name is not supported"},
		{"pin-value", "pkcs11:token=x?pin-value=1234", nil, "PIN in the URI"},
		{"pin-value in the path", "pkcs11:token=x;pin-value=1234", nil, "PIN in the URI"},
		{"not secret key", "pkcs11:object=k;type=private", nil, "secret keys only"},
		{"empty object", "pkcs11:object=", nil, "object= is empty"},
		{"bad escape", "pkcs11:object=%zz", nil, "uri"},
		{"bad slot", "pkcs11:slot-id=x", nil, "must be a number"},
		{"duplicate", "pkcs11:object=a;object=b", nil, "uri"},
		{"not a URI", "http://x?pin-value=1234", nil, "not a PKCS#11 URI"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseURI(c.uri)
			if c.err != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrInvalidInput)
				assert.Contains(t, err.Error(), c.err)
				assert.NotContains(t, err.Error(), "1234", "a PIN must never appear in an error")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
		})
	}
}

// TestSelectionIgnoresKey: object= and id= name a key, not a token: Open's
// selection is the same without them.
func TestSelectionIgnoresKey(t *testing.T) {
	sel, mod, err := selection(Config{Module: "m.so", URI: "pkcs11:token=t;object=k;id=%01"})
	require.NoError(t, err)
	assert.Equal(t, selector{label: "t"}, sel)
	assert.Equal(t, "m.so", mod)
	_, _, err = selection(Config{Module: "m.so", URI: "pkcs11:token=t;objekt=k"})
	assert.ErrorIs(t, err, ErrInvalidInput)
}
