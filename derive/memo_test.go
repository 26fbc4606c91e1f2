package derive

import (
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
)

// The memo is pure logic: tested directly (TestDestroyForgetsRefusals and
// TestRowRefusalNotRemembered test it through Derive and Destroy).
func TestMemo(t *testing.T) {
	var m memo
	f := Encrypt{Cipher: AES, Mode: ECB}
	ecb := []uint{pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_AES_ECB}
	assert.Nil(t, m.failed(1, MACUnwrap, f), "nothing refused")
	assert.False(t, m.refusedMechanisms(1, MACUnwrap, ecb))
	m.forget(1) // nothing to forget: no lock taken, nothing made
	assert.False(t, m.any.Load())

	refused := errors.New("refused")
	m.fail(1, MACUnwrap, f.Name(), ecb, refused)
	assert.Same(t, refused, m.failed(1, MACUnwrap, f))
	assert.Nil(t, m.failed(2, MACUnwrap, f), "per base key")
	assert.Nil(t, m.failed(1, Native, f), "per strategy")
	assert.Nil(t, m.failed(1, MACUnwrap, Encrypt{Cipher: AES, Mode: CBC}), "per function")
	assert.True(t, m.refusedMechanisms(1, MACUnwrap, ecb), "the same mechanisms, whatever the function")
	assert.False(t, m.refusedMechanisms(1, MACUnwrap, []uint{pkcs11.CKM_AES_CMAC, pkcs11.CKM_AES_ECB}))
	assert.False(t, m.refusedMechanisms(2, MACUnwrap, ecb))

	m.fail(2, MACUnwrap, f.Name(), ecb, refused)
	m.forget(1)
	assert.Nil(t, m.failed(1, MACUnwrap, f), "forgotten with the key")
	assert.False(t, m.refusedMechanisms(1, MACUnwrap, ecb))
	assert.Same(t, refused, m.failed(2, MACUnwrap, f), "other keys kept")
	assert.True(t, m.refusedMechanisms(2, MACUnwrap, ecb))
}
