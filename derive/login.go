package derive

import (
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// recovery is how the Token keeps its login across lost sessions: the
// anchor session, held open for the Token's life, keeps the login; after a
// call said a session or the login was lost (pool.losses), the next
// session taken first restores the anchor and the login (Token.restore).
//
// anchor, restored and loginErr are guarded by the pool's mu: one look
// says whether a restore is due and lends a session, and Close takes the
// anchor to close as it closes the pool.
type recovery struct {
	mu     sync.Mutex           // one restore at a time
	anchor pkcs11.SessionHandle // held open for the token's life: keeps the login
	// restored is the pool's losses when the anchor and the login were
	// last checked, and loginErr a C_Login that failed then (never
	// retried).
	restored uint64
	loginErr error
}

// dueLocked reports whether a restore is due (or its failure to answer)
// after losses; the pool's mu is held.
func (r *recovery) dueLocked(losses uint64) bool { return losses != r.restored || r.loginErr != nil }

// login logs the application in: at Open, and again by restore if the
// login was lost. A failed C_Login is never retried, since tokens lock PINs
// after a few wrong tries.
func (t *Token) login(s pkcs11.SessionHandle) error {
	rv := t.mod.ck.Login(uint(s), pkcs11.CKU_USER, t.pin)
	if rv == pkcs11.CKR_OK || rv == pkcs11.CKR_USER_ALREADY_LOGGED_IN {
		return nil
	}
	// The error names the CKR code only: never the PIN.
	te := &TokenError{Step: "log in", Call: "C_Login", Err: pkcs11.Error(rv)}
	switch rv {
	case pkcs11.CKR_USER_TYPE_INVALID, pkcs11.CKR_USER_PIN_NOT_INITIALIZED, pkcs11.CKR_FUNCTION_NOT_SUPPORTED:
		if t.info.Flags&pkcs11.CKF_LOGIN_REQUIRED == 0 {
			te.Hint = fmt.Sprintf("token %q takes no user login (its flags lack CKF_LOGIN_REQUIRED): a PIN was given where none is needed; open it without one", strings.TrimSpace(t.info.Label))
		}
	}
	return te
}

// restore re-opens the anchor session if the token lost it, and logs in
// again with the Token's PIN if the login was lost with it. A C_Login that
// fails is never retried (tokens lock PINs after a few wrong tries): the
// Token answers its error from then on.
func (t *Token) restore() error {
	r, p := &t.rec, &t.pool
	r.mu.Lock()
	defer r.mu.Unlock()
	p.mu.Lock()
	losses, done, anchor, loginErr := p.losses, p.losses == r.restored, r.anchor, r.loginErr
	p.mu.Unlock()
	if loginErr != nil {
		return loginErr
	}
	if done {
		return nil
	}
	c := t.mod.ck
	info, rv := c.GetSessionInfo(uint(anchor))
	if lostSession(ckErr(rv)) {
		a, orv := c.OpenSession(t.slot, t.sessionFlags())
		if orv != pkcs11.CKR_OK {
			return &TokenError{Step: "re-open session", Call: "C_OpenSession", Err: pkcs11.Error(orv)}
		}
		anchor = pkcs11.SessionHandle(a)
		p.mu.Lock()
		closed := p.closed
		if !closed {
			r.anchor = anchor
		}
		p.mu.Unlock()
		if closed {
			c.CloseSession(a)
			return ErrClosed
		}
		info, rv = c.GetSessionInfo(a)
	}
	if rv != pkcs11.CKR_OK {
		return &TokenError{Step: "check login", Call: "C_GetSessionInfo", Err: pkcs11.Error(rv)}
	}
	if t.pin != "" && !loggedIn(info.State) {
		if err := t.login(anchor); err != nil {
			p.mu.Lock()
			r.loginErr = err
			p.mu.Unlock()
			return err
		}
	}
	p.mu.Lock()
	r.restored = losses
	p.mu.Unlock()
	return nil
}

func loggedIn(state uint) bool {
	switch state {
	case pkcs11.CKS_RO_USER_FUNCTIONS, pkcs11.CKS_RW_USER_FUNCTIONS, pkcs11.CKS_RW_SO_FUNCTIONS:
		return true
	}
	return false
}
