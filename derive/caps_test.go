package derive

import (
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
)

// The capabilities cache, on NSS softoken seen through the forwarder: the
// mechanism list is read once, each mechanism's flags once, and listed
// names what the token lacks in one error.
func TestCapabilitiesReadOnce(t *testing.T) {
	lt, w := wrapped(t, fwd.Config{Hide: []string{"CKM_AES_CMAC"}, NoFlag: []string{"CKM_AES_ECB:CKF_UNWRAP"}})
	tok := lt.tok
	c := &tok.caps
	require.Zero(t, fwd.Calls(t, w, "C_GetMechanismList")+fwd.Calls(t, w, "C_GetMechanismInfo"), "Open reads no capability")

	list, err := c.mechanisms()
	require.NoError(t, err)
	assert.True(t, list[pkcs11.CKM_AES_ECB])
	assert.False(t, list[pkcs11.CKM_AES_CMAC], "hidden")
	listCalls := fwd.Calls(t, w, "C_GetMechanismList")
	require.NotZero(t, listCalls) // one read: the length, then the list
	again, err := c.mechanisms()
	require.NoError(t, err)
	assert.Equal(t, len(list), len(again))
	assert.Equal(t, listCalls, fwd.Calls(t, w, "C_GetMechanismList"), "the list is read once")

	info := fwd.Calls(t, w, "C_GetMechanismInfo")
	f, ok := c.flagsOf(pkcs11.CKM_AES_ECB)
	require.True(t, ok)
	assert.NotZero(t, f&pkcs11.CKF_ENCRYPT)
	assert.Zero(t, f&pkcs11.CKF_UNWRAP, "cleared by the forwarder")
	c.flagsOf(pkcs11.CKM_AES_ECB)
	assert.Equal(t, info+1, fwd.Calls(t, w, "C_GetMechanismInfo"), "the flags are read once per mechanism")

	assert.NoError(t, c.listed(mechUse{pkcs11.CKM_AES_ECB, pkcs11.CKF_ENCRYPT}, mechUse{pkcs11.CKM_AES_CBC, 0}))
	err = c.listed(mechUse{pkcs11.CKM_AES_CMAC, pkcs11.CKF_SIGN}, mechUse{pkcs11.CKM_AES_ECB, pkcs11.CKF_UNWRAP | pkcs11.CKF_ENCRYPT})
	require.Error(t, err)
	assert.Equal(t, "the token does not list CKM_AES_CMAC; the token lists CKM_AES_ECB without CKF_UNWRAP", err.Error())
	assert.ErrorIs(t, err, ErrUnsupported)
	nl, try := tryable(err)
	assert.True(t, try, "a strategy not listed is still worth trying")
	assert.NotNil(t, nl)

	assert.True(t, tok.Lists(pkcs11.CKM_AES_ECB))
	assert.False(t, tok.Lists(pkcs11.CKM_AES_CMAC))
	assert.True(t, tok.listsFor(pkcs11.CKM_AES_ECB, pkcs11.CKF_ENCRYPT))
	assert.False(t, tok.listsFor(pkcs11.CKM_AES_ECB, pkcs11.CKF_UNWRAP))
}

// The listing errors are pure logic: tested directly.
func TestListingErrors(t *testing.T) {
	assert.Equal(t, "CKF_UNWRAP", flagNames(pkcs11.CKF_UNWRAP))
	assert.Equal(t, "CKF_SIGN and CKF_UNWRAP", flagNames(pkcs11.CKF_SIGN|pkcs11.CKF_UNWRAP))
	assert.Equal(t, "CKF(0x80000000)", flagNames(0x80000000))
	assert.Equal(t, "", joinAnd(nil))
	assert.Equal(t, "a, b and c", joinAnd([]string{"a", "b", "c"}))

	base := &Key{Label: "base"}
	lerr := &notListedError{mechanism: "CKM_AES_ECB_ENCRYPT_DATA"}
	err := needsAttrs(base, lerr, "CKM_AES_ECB_ENCRYPT_DATA", []string{"CKA_DERIVE"})
	assert.Equal(t, "the token does not list CKM_AES_ECB_ENCRYPT_DATA; and CKM_AES_ECB_ENCRYPT_DATA needs CKA_DERIVE on the base key", err.Error())
	assert.ErrorIs(t, err, ErrMissingAttribute)
	assert.ErrorIs(t, err, ErrUnsupported)
	_, try := tryable(err)
	assert.False(t, try, "a base key that lacks an attribute is not tried")
	assert.Nil(t, lerr.missing, "needsAttrs copies the listing error")
	assert.Same(t, lerr, needsAttrs(base, lerr, "x", nil))

	other := errors.New("the list could not be read")
	assert.Same(t, other, needsAttrs(base, other, "x", []string{"CKA_SIGN"}))
	_, try = tryable(other)
	assert.False(t, try)
	_, try = tryable(nil)
	assert.True(t, try)
}
