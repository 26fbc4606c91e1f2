package derive

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
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

// TestKeysByID: the CKA_ID a Request or KeySpec gives is set on the key,
// in the Key returned, and Find selects by it, alone or with the label.
func TestKeysByID(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		// IDs unique to this run: the lab tokens are shared.
		id, dkID := []byte(lab.UniqueLabel("byid")), []byte(lab.UniqueLabel("byid-dk"))
		base, err := lt.tok.Generate(ctx, KeySpec{Label: "byid-base", ID: id, Type: KeyAES128, Usage: UseDerive})
		require.NoError(t, err)
		defer lt.tok.Destroy(ctx, base)
		assert.Equal(t, id, base.ID)
		found, err := lt.tok.Find(ctx, Selector{ID: id})
		require.NoError(t, err)
		assert.Equal(t, base.Handle, found.Handle)
		assert.Equal(t, id, found.ID)
		_, err = lt.tok.Find(ctx, Selector{Label: "byid-other", ID: id})
		assert.ErrorIs(t, err, ErrNotFound)

		res, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: make([]byte, 16), KeyType: KeyAES128, ID: dkID})
		require.NoError(t, err)
		defer lt.tok.Destroy(ctx, res.Key)
		assert.Equal(t, dkID, res.Key.ID)
		got, err := lt.tok.Find(ctx, Selector{ID: dkID})
		require.NoError(t, err)
		assert.Equal(t, res.Key.Handle, got.Handle)
	})
}
