package derive

import (
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
)

// noteLoss counts a loss, as the release of a session whose call said it
// was lost does.
func noteLoss(tok *Token) {
	tok.pool.mu.Lock()
	tok.pool.losses++
	tok.pool.mu.Unlock()
}

// Login recovery at the unit level, on SoftHSM2 through the forwarder
// (SoftHSM2 logs out when its last session closes): restore makes no call
// while nothing was lost; after a loss it re-opens the anchor and logs in
// again, once; a C_Login that fails then is answered from then on, never
// retried.
func TestRestore(t *testing.T) {
	lt, w := softHSM2Wrapped(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_Login", N: 3, CKR: pkcs11.CKR_PIN_INCORRECT}}})
	tok := lt.tok
	require.Equal(t, 1, fwd.Calls(t, w, "C_Login"), "Open logged in")
	sessionInfo := fwd.Calls(t, w, "C_GetSessionInfo")
	require.NoError(t, tok.restore())
	require.Equal(t, sessionInfo, fwd.Calls(t, w, "C_GetSessionInfo"), "nothing lost: no call")

	// A loss the anchor survived: checked, nothing re-opened.
	noteLoss(tok)
	opens := fwd.Calls(t, w, "C_OpenSession")
	require.NoError(t, tok.restore())
	assert.Equal(t, sessionInfo+1, fwd.Calls(t, w, "C_GetSessionInfo"), "the anchor checked")
	assert.Equal(t, opens, fwd.Calls(t, w, "C_OpenSession"))
	assert.Equal(t, 1, fwd.Calls(t, w, "C_Login"))
	require.NoError(t, tok.restore())
	assert.Equal(t, sessionInfo+1, fwd.Calls(t, w, "C_GetSessionInfo"), "restored: no call")

	// Every session closed behind the Token's back: the anchor re-opened
	// and the login made again.
	require.NoError(t, testCtx(tok).CloseAllSessions(tok.SlotID()))
	noteLoss(tok)
	require.NoError(t, tok.restore())
	assert.Equal(t, opens+1, fwd.Calls(t, w, "C_OpenSession"), "the anchor re-opened")
	assert.Equal(t, 2, fwd.Calls(t, w, "C_Login"), "logged in again")
	info, err := testCtx(tok).GetSessionInfo(tok.rec.anchor)
	require.NoError(t, err)
	assert.True(t, loggedIn(info.State))

	// The third C_Login fails: its error is kept, and no C_Login is made
	// again.
	require.NoError(t, testCtx(tok).CloseAllSessions(tok.SlotID()))
	noteLoss(tok)
	err = tok.restore()
	var te *TokenError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "C_Login", te.Call)
	assert.Equal(t, 3, fwd.Calls(t, w, "C_Login"))
	assert.Same(t, err, tok.restore())
	_, serr := tok.session()
	assert.Same(t, err, serr, "the Token answers it from then on")
	assert.Equal(t, 3, fwd.Calls(t, w, "C_Login"), "never retried")
}

func TestLoggedIn(t *testing.T) {
	assert.True(t, loggedIn(pkcs11.CKS_RW_USER_FUNCTIONS))
	assert.True(t, loggedIn(pkcs11.CKS_RO_USER_FUNCTIONS))
	assert.True(t, loggedIn(pkcs11.CKS_RW_SO_FUNCTIONS))
	assert.False(t, loggedIn(pkcs11.CKS_RW_PUBLIC_SESSION))
	assert.False(t, loggedIn(pkcs11.CKS_RO_PUBLIC_SESSION))
}
