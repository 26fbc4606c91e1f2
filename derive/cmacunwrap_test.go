package derive

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/p11derive/p11derive/internal/lab"
)

// TestDbl checks the CMAC subkey doubling against NIST SP 800-38B D.1
// (AES-128: L = 7df76b0c1ab899b33e42f047b91b546f, K1 = fbeed618357133667c85e08f7236a8de)
// and D.4 (TDEA: L = c8cc74e98a7329a2, K1 = 9198e9d3149c7ec9... from the three-key example).
func TestDbl(t *testing.T) {
	k1 := make([]byte, 16)
	dbl(k1, lab.Unhex("7df76b0c1ab899b33e42f047b91b546f"))
	assert.Equal(t, "fbeed618357133667c85e08f7236a8de", hex.EncodeToString(k1))
	k2 := make([]byte, 16)
	dbl(k2, k1)
	assert.Equal(t, "f7ddac306ae266ccf90bc11ee46d513b", hex.EncodeToString(k2))
	// 8-byte blocks: Rb = 0x1B.
	k1 = make([]byte, 8)
	dbl(k1, lab.Unhex("8000000000000000"))
	assert.Equal(t, "000000000000001b", hex.EncodeToString(k1))
}
