package derive

import (
	"context"
	"sync"

	"github.com/miekg/pkcs11"
)

// pool is the sessions the Token lends to operations: those idle, those
// open, the bound on them and the operations waiting for one, first come
// first served. Its methods keep the books; the Token's (acquire, release)
// make the PKCS#11 calls.
//
// Its mu also guards the count of losses and the Token's recovery state
// (Token.rec: anchor, restored, loginErr): one look, in Token.sessionCtx,
// says whether a restore is due and which session to lend.
type pool struct {
	mu     sync.Mutex
	idle   []*session
	all    map[pkcs11.SessionHandle]bool
	closed bool
	// limit bounds len(all)+opening when not 0 (Config.MaxSessions, or the
	// token's bound, lowered by CKR_SESSION_COUNT); opening counts the
	// C_OpenSession calls under way; waiters are the operations waiting for
	// a session, first come first served.
	limit   int
	opening int
	waiters []chan struct{}
	onWait  func() // tests: called when an operation starts to wait
	// losses counts the calls that said a session, or the login, was lost
	// (see session.note): a session pooled before it last changed is
	// checked before it is lent (session.seen), and the Token restores what
	// the loss may have taken (see recovery).
	losses uint64
}

// tokenLimit is the pool bound a token's ulMaxSessionCount gives: none (0)
// when it states none (CK_EFFECTIVELY_INFINITE, CK_UNAVAILABLE_INFORMATION),
// else the count less the anchor session, and at least 1.
func tokenLimit(count uint) int {
	if count == pkcs11.CK_EFFECTIVELY_INFINITE || count == pkcs11.CK_UNAVAILABLE_INFORMATION || count > 1<<20 {
		return 0
	}
	return max(int(count)-1, 1)
}

// takeLocked takes the session released last, if one is idle; p.mu is
// held.
func (p *pool) takeLocked() (*session, bool) {
	n := len(p.idle)
	if n == 0 {
		return nil, false
	}
	s := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return s, true
}

// reserveLocked reserves a place for a session to open, if the bound
// allows one (p.opening); p.mu is held.
func (p *pool) reserveLocked() bool {
	if p.limit == 0 || len(p.all)+p.opening < p.limit {
		p.opening++
		return true
	}
	return false
}

// wait waits, p.mu held (and released on return), until a session may be
// free: released, or forgotten so that another may be opened. A waiter
// whose ctx ends after it was woken passes the wake-up on.
func (p *pool) wait(ctx context.Context) error {
	w := make(chan struct{}, 1)
	p.waiters = append(p.waiters, w)
	hook := p.onWait
	p.mu.Unlock()
	if hook != nil {
		hook()
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, x := range p.waiters {
			if x == w {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		p.wakeLocked() // woken meanwhile: the session goes to the next
		return ctx.Err()
	}
}

// wakeLocked wakes the first waiter, if any; p.mu is held.
func (p *pool) wakeLocked() {
	if len(p.waiters) == 0 {
		return
	}
	w := p.waiters[0]
	p.waiters[0] = nil
	p.waiters = p.waiters[1:]
	w <- struct{}{}
}

// put takes back a session lent, unless a call said it is gone: then it
// is forgotten, and the loss counted for the next take to restore what it
// may have taken. Either way a waiter, if any, is woken.
func (p *pool) put(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.lost != 0 {
		p.losses++
	}
	if p.closed {
		return
	}
	if s.lost == lossSession {
		delete(p.all, s.h)
		p.wakeLocked()
		return
	}
	// The session struct goes back to the pool with the session: the next
	// operation reuses it, nothing allocated.
	s.calls, s.strategy, s.lost, s.madeCall, s.madeMech = 0, "", 0, "", 0
	s.ahead.n, s.ahead.done = 0, false
	p.idle = append(p.idle, s)
	p.wakeLocked()
}

// forget drops a session the token no longer knows. It is not closed: its
// handle may already name a session opened since.
func (p *pool) forget(h pkcs11.SessionHandle) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.all, h)
	p.wakeLocked()
}

// closeLocked closes the pool, p.mu held: it returns the sessions open,
// for the caller to close, and wakes every waiter (they find the pool
// closed).
func (p *pool) closeLocked() map[pkcs11.SessionHandle]bool {
	p.closed = true
	all := p.all
	p.all, p.idle = nil, nil
	for _, w := range p.waiters {
		close(w)
	}
	p.waiters = nil
	return all
}

// MaxSessions is the bound on the sessions the Token lends at once (see
// Config.MaxSessions), or 0 for none.
func (t *Token) MaxSessions() int {
	t.pool.mu.Lock()
	defer t.pool.mu.Unlock()
	return t.pool.limit
}

// acquire takes a session for an operation of ctx, unless ctx is done: the
// preamble of every Token method that makes PKCS#11 calls. With a bound
// on the sessions, it waits for one while ctx allows.
func (t *Token) acquire(ctx context.Context) (*session, error) {
	if err := contextDone(ctx); err != nil {
		return nil, err
	}
	return t.sessionCtx(ctx)
}

// session takes a session from the pool, without a context to end a wait.
func (t *Token) session() (*session, error) { return t.sessionCtx(context.Background()) }

// sessionCtx takes a session from the pool, opening one if none is idle
// and the bound allows, else waiting for one to be released (or for ctx).
//
// After a call said a session or the login was lost (a session closed
// behind p11derive's back, a token removed and put back), restore first
// re-opens the anchor session and logs in again if needed, and sessions
// pooled before the loss are checked with C_GetSessionInfo: those the token
// no longer knows are forgotten.
//
// The lock is held for a few slice operations only: operations run in
// parallel on as many sessions as the bound (or the token) allows.
func (t *Token) sessionCtx(ctx context.Context) (*session, error) {
	p := &t.pool
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if t.rec.dueLocked(p.losses) {
			p.mu.Unlock()
			if err := t.restore(); err != nil {
				return nil, err
			}
			continue
		}
		losses := p.losses
		s, ok := p.takeLocked()
		if !ok {
			if p.reserveLocked() {
				p.mu.Unlock()
				s, full, err := t.openSession(losses)
				if !full {
					return s, err
				}
				continue // the bound was lowered: wait for a session
			}
			if err := p.wait(ctx); err != nil {
				return nil, err
			}
			continue
		}
		p.mu.Unlock()
		if s.seen != losses {
			if _, rv := t.mod.ck.GetSessionInfo(uint(s.h)); lostSession(ckErr(rv)) {
				p.forget(s.h)
				continue
			}
			s.seen = losses
		}
		return s, nil
	}
}

// openSession opens a session for the pool, a place for it reserved
// (pool.opening). full says the token answered CKR_SESSION_COUNT while the
// Token had sessions open: the bound is lowered to them, and the caller
// waits for one of them instead of failing.
func (t *Token) openSession(losses uint64) (s *session, full bool, err error) {
	sh, rv := t.mod.ck.OpenSession(t.slot, t.sessionFlags())
	p := &t.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opening--
	if rv != pkcs11.CKR_OK {
		if rv == pkcs11.CKR_SESSION_COUNT && !p.closed && len(p.all) > 0 {
			p.limit = len(p.all)
			return nil, true, nil
		}
		p.wakeLocked() // the place reserved is free again
		return nil, false, &TokenError{Step: "open session", Call: "C_OpenSession", Err: pkcs11.Error(rv)}
	}
	h := pkcs11.SessionHandle(sh)
	if p.closed {
		t.mod.ck.CloseSession(sh)
		return nil, false, ErrClosed
	}
	p.all[h] = true
	return &session{token: t, ck: t.mod.ck, h: h, seen: losses}, false, nil
}

// release returns s to the pool, unless a call said it is gone: then it is
// forgotten, and the next session() restores what the loss may have taken.
// Either way a waiter, if any, is woken.
func (t *Token) release(s *session) {
	t.calls.Add(int64(s.calls))
	t.pool.put(s)
}
