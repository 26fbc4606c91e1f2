package schemetest

import (
	"encoding/hex"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"

	"github.com/p11derive/p11derive/internal/lab"
)

// TestCMACAnchors anchors the reference CMAC to RFC 4493 §4 (AES-128,
// = SP 800-38B D.1). The TDES CMAC is anchored by the TR-31 version B
// vectors (derive/tr31's reference test).
func TestCMACAnchors(t *testing.T) {
	b := Block(t, pkcs11.CKK_AES, lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c"))
	for msg, want := range map[string]string{
		"":                                 "bb1d6929e95937287fa37d129b756746",
		"6bc1bee22e409f96e93d7e117393172a": "070a16b46b4d4144f79bdd9dd04a287c",
		"6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411":                                                 "dfa66747de9ae63030ca32611497c827",
		"6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710": "51f0bebf7e3b9d92fc49741779363cfe",
	} {
		assert.Equal(t, want, hex.EncodeToString(CMAC(b, lab.Unhex(msg))), msg)
	}
	// FIPS 197 C.1 for the ECB helper.
	assert.Equal(t, "69c4e0d86a7b0430d8cdb78070b4c55a", hex.EncodeToString(ECB(Block(t, pkcs11.CKK_AES, lab.Unhex("000102030405060708090a0b0c0d0e0f")), lab.Unhex("00112233445566778899aabbccddeeff"))))
}
