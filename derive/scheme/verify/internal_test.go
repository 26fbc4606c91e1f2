package verify

import (
	"context"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/labtok"
)

// TestWrongAnswer: a token's key that is not the known answer's is Wrong,
// with both check values, and nothing is left behind.
func TestWrongAnswer(t *testing.T) {
	c := cases[0]
	c.want = []answer{des2("0123456789ABCDEF0123456789ABCDEF")}
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		objects := lt.Objects(t)
		chk := c.run(context.Background(), lt.Tok, nil)
		assert.Equal(t, Wrong, chk.Status, "%+v", chk)
		assert.Equal(t, c.want[0].kcv(), chk.Want)
		assert.Equal(t, cases[0].want[0].kcv(), chk.Got, "the token's key is the published one")
		assert.Equal(t, objects, lt.Objects(t))
	})
}

// TestClassify: a refusal CKR is Refused, any other CKR (the module or the
// session failing) is Error, and so is bad input.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Status
		ckr  string
	}{
		{&derive.TokenError{Step: "derive DK", Call: "C_DeriveKey", Err: pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)}, Refused, "CKR_MECHANISM_INVALID"},
		{&derive.TokenError{Step: "derive DK", Call: "C_DeriveKey", Err: pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)}, Error, "CKR_DEVICE_ERROR"},
		{&derive.TokenError{Step: "open a session", Call: "C_OpenSession", Err: pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID)}, Error, "CKR_SESSION_HANDLE_INVALID"},
		{&derive.UnsupportedError{Function: "xor-data", Reasons: []derive.StrategyReason{{Strategy: "native", Reason: "refused",
			Err: &derive.TokenError{Call: "C_DeriveKey", Err: pkcs11.Error(pkcs11.CKR_KEY_TYPE_INCONSISTENT)}}}}, Refused, "CKR_KEY_TYPE_INCONSISTENT"},
		{&derive.InputError{Field: "data", Problem: "bad"}, Error, ""},
		{errors.New("something else"), Error, ""},
	} {
		var chk Check
		classify(&chk, c.err, "")
		assert.Equal(t, c.want, chk.Status, "%v", c.err)
		assert.Equal(t, c.ckr, chk.CKR, "%v", c.err)
	}
}
