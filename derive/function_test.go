package derive

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCipherModeNames: the names of Encrypt and Decrypt, from the table
// made once (without an allocation) and for values outside it; the ECB
// names parse back to their function (ParseFunction).
func TestCipherModeNames(t *testing.T) {
	for _, c := range []struct {
		f    Function
		name string
	}{
		{Encrypt{Cipher: AES, Mode: ECB}, "aes-ecb"},
		{Encrypt{Cipher: AES, Mode: CBC}, "aes-cbc"},
		{Encrypt{Cipher: DES3, Mode: ECB}, "des3-ecb"},
		{Encrypt{Cipher: DES, Mode: CBC}, "des-cbc"},
		{Decrypt{Cipher: AES, Mode: ECB}, "aes-ecb-decrypt"},
		{Decrypt{Cipher: DES3, Mode: CBC}, "des3-cbc-decrypt"},
		{Encrypt{Cipher: 9, Mode: ECB}, "cipher(9)-ecb"},
		{Decrypt{Cipher: AES, Mode: 7}, "aes-mode(7)-decrypt"},
	} {
		assert.Equal(t, c.name, c.f.Name())
		if strings.Contains(c.name, "-ecb") && !strings.Contains(c.name, "(") {
			f, err := ParseFunction(c.name, nil)
			require.NoError(t, err, c.name)
			assert.Equal(t, c.name, f.Name())
		}
	}
	assert.Zero(t, testing.AllocsPerRun(100, func() { _ = Encrypt{Cipher: AES, Mode: ECB}.Name() }), "no allocation")
}
