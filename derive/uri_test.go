package derive

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

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
