package derive

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// Config says which PKCS#11 module to load, which of its tokens to use, and
// how to log in.
//
// The token is selected by URI, Label, Serial or Slot; fields that are set
// must all match. With none set, the module must have exactly one token.
type Config struct {
	// Module is the path of the PKCS#11 module (a shared library). It may be
	// left empty when URI has a module-path attribute.
	Module string
	// InitArgs is passed to C_Initialize as CK_C_INITIALIZE_ARGS.pReserved.
	// NSS softoken needs it (configdir='sql:DIR' ...); most modules don't.
	InitArgs string

	// URI is an RFC 7512 PKCS#11 URI such as "pkcs11:token=Payments;serial=1234"
	// (see ParseURI). Its token, manufacturer, model, serial and slot-id
	// attributes select the token; module-path names the module; object
	// and id name a key, which Open does not use (ParseURI(URI).Key is the
	// Selector for Token.Find). pin-value, pin-source and every attribute
	// p11derive does not honour are refused (use PIN).
	URI    string
	Label  string // CK_TOKEN_INFO.label
	Serial string // CK_TOKEN_INFO.serialNumber
	Slot   *uint  // slot ID

	// PIN is the user PIN. When empty, p11derive does not log in (tokens
	// such as NSS softoken allow session objects without login).
	PIN string

	// ReadOnly opens read-only sessions: session objects only, nothing on
	// the token can change (the probe's mode). Requests for persistent keys
	// are then refused before any call.
	ReadOnly bool

	// MaxSessions bounds the sessions the Token lends to operations at
	// once; an operation that finds them all busy waits for one (or for its
	// context). The Token holds one more session for its whole life, the
	// anchor that keeps the login. Zero means the token's own bound, when
	// CK_TOKEN_INFO.ulMaxSessionCount gives one (less the anchor), else no
	// bound. Whatever the bound, a C_OpenSession the token answers with
	// CKR_SESSION_COUNT (other applications hold sessions too) lowers it to
	// the sessions the Token has open, and the operation waits.
	MaxSessions int

	// Logger, when set, receives structured records of what the Token does:
	// the token opened and closed (Info, Debug) and, for every Derive, its
	// function, strategy, PKCS#11 calls, duration and outcome (Debug when
	// it succeeds, Warn when it fails). Records name labels, mechanisms,
	// strategies and CKR codes, never a PIN or key material. Nil (the
	// default) logs nothing and costs nothing.
	Logger *slog.Logger
}

// Token is an open connection to one PKCS#11 token. It is safe for
// concurrent use: each operation takes a session of its own from a pool.
//
// Session objects (the default for derived keys) live as long as the
// session that made them, and Token keeps its sessions open until Close.
//
// If the token loses sessions behind the Token's back (a reset, a removal,
// another library of the process closing them or logging out), the call
// that meets a dead session fails with the token's error; the Token drops
// that session (its session objects, derived keys included, went with it),
// and the next call re-opens what it needs and logs in again with the PIN
// it was given. A C_Login that fails then is never retried:
// the Token answers its error from then on.
type Token struct {
	mod    *module
	slot   uint
	info   pkcs11.TokenInfo
	pin    string
	anchor pkcs11.SessionHandle // held open for the token's life: keeps the login
	// readOnly: sessions without CKF_RW_SESSION (Config.ReadOnly).
	readOnly bool
	log      *slog.Logger // Config.Logger: nil logs nothing

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
	// (see session.note); restored is its value when the anchor and the
	// login were last checked, and loginErr a C_Login that failed then
	// (never retried).
	losses, restored uint64
	loginErr         error
	restoreMu        sync.Mutex // one restore at a time

	caps      capabilities // the mechanisms listed and their flags
	memo      memo         // what worked and what failed, per base key
	templates templateCache
	calls     atomic.Int64 // PKCS#11 calls made through pooled sessions
	// noCheckValue: the token answered that it has no CKA_CHECK_VALUE
	// attribute (CheckValueBy computes check values without asking again).
	noCheckValue atomic.Bool
}

// Open loads the module (or shares it if this process already did, with
// p11derive or with crypto11), selects the token and logs in.
func Open(cfg Config) (*Token, error) {
	sel, modPath, err := selection(cfg)
	if err != nil {
		logOpenFailed(cfg.Logger, cfg.Module, sel, err)
		return nil, err
	}
	mod, err := loadModule(modPath, cfg.InitArgs)
	if err != nil {
		logOpenFailed(cfg.Logger, modPath, sel, err)
		return nil, err
	}
	if cfg.MaxSessions < 0 {
		mod.release()
		err := inputErr("max-sessions", "MaxSessions is %d: give a bound of at least 1, or 0 for the token's own", cfg.MaxSessions)
		logOpenFailed(cfg.Logger, modPath, sel, err)
		return nil, err
	}
	t := &Token{mod: mod, pin: cfg.PIN, readOnly: cfg.ReadOnly, log: cfg.Logger, all: map[pkcs11.SessionHandle]bool{}}
	if err := t.open(sel); err != nil {
		mod.release()
		logOpenFailed(cfg.Logger, modPath, sel, err)
		return nil, err
	}
	t.limit = cfg.MaxSessions
	if t.limit == 0 {
		t.limit = tokenLimit(t.info.MaxSessionCount)
	}
	t.logOpened()
	return t, nil
}

type selector struct {
	label, serial, manufacturer, model string
	slot                               *uint
}

func (s selector) String() string {
	var parts []string
	if s.label != "" {
		parts = append(parts, "label "+strconv.Quote(s.label))
	}
	if s.serial != "" {
		parts = append(parts, "serial "+strconv.Quote(s.serial))
	}
	if s.manufacturer != "" {
		parts = append(parts, "manufacturer "+strconv.Quote(s.manufacturer))
	}
	if s.model != "" {
		parts = append(parts, "model "+strconv.Quote(s.model))
	}
	if s.slot != nil {
		parts = append(parts, fmt.Sprintf("slot %d", *s.slot))
	}
	if len(parts) == 0 {
		return "any token"
	}
	return strings.Join(parts, ", ")
}

// selection merges the URI with the explicit fields, refusing conflicts.
func selection(cfg Config) (selector, string, error) {
	s := selector{label: cfg.Label, serial: cfg.Serial, slot: cfg.Slot}
	mod := cfg.Module
	if cfg.URI != "" {
		u, err := ParseURI(cfg.URI)
		if err != nil {
			return s, "", err
		}
		for _, m := range []struct {
			dst       *string
			attr, uri string
		}{{&s.label, "token", u.Token}, {&s.serial, "serial", u.Serial}, {&s.manufacturer, "manufacturer", u.Manufacturer}, {&s.model, "model", u.Model}} {
			if m.uri == "" {
				continue
			}
			if *m.dst != "" && *m.dst != m.uri {
				return s, "", inputErr("uri", "%s %q in the URI conflicts with %q", m.attr, m.uri, *m.dst)
			}
			*m.dst = m.uri
		}
		if u.Slot != nil {
			if s.slot != nil && *s.slot != *u.Slot {
				return s, "", inputErr("uri", "slot-id %d in the URI conflicts with slot %d", *u.Slot, *s.slot)
			}
			s.slot = u.Slot
		}
		if u.ModulePath != "" {
			if mod != "" && mod != u.ModulePath {
				return s, "", inputErr("uri", "module-path %q in the URI conflicts with module %q", u.ModulePath, mod)
			}
			mod = u.ModulePath
		}
	}
	if mod == "" {
		return s, "", inputErr("module", "no PKCS#11 module given")
	}
	return s, mod, nil
}

func (t *Token) open(sel selector) error {
	c := t.mod.ck
	slots, rv := c.GetSlotList(true)
	if rv != pkcs11.CKR_OK {
		return &TokenError{Step: "list slots", Call: "C_GetSlotList", Err: pkcs11.Error(rv)}
	}
	var matches []uint
	var seen []string
	for _, id := range slots {
		info, rv := c.GetTokenInfo(id)
		if rv != pkcs11.CKR_OK {
			continue // a slot whose token vanished is not a match
		}
		// Every token present is listed, matching or not: the error says
		// what there is to choose from.
		seen = append(seen, fmt.Sprintf("slot %d %q serial %q", id, strings.TrimSpace(info.Label), strings.TrimSpace(info.SerialNumber)))
		if sel.slot != nil && id != *sel.slot {
			continue
		}
		if (sel.label == "" || info.Label == sel.label) &&
			(sel.serial == "" || info.SerialNumber == sel.serial) &&
			(sel.manufacturer == "" || info.ManufacturerID == sel.manufacturer) &&
			(sel.model == "" || info.Model == sel.model) {
			matches = append(matches, id)
			t.info = info
		}
	}
	switch len(matches) {
	case 0:
		return fmt.Errorf("p11derive: no token with %s (tokens present: %s): %w", sel, orNone(seen), ErrNotFound)
	case 1:
	default:
		return fmt.Errorf("p11derive: %d tokens match %s (%s); select one by label, serial or slot: %w",
			len(matches), sel, strings.Join(seen, "; "), ErrAmbiguous)
	}
	t.slot = matches[0]
	t.caps.ck, t.caps.slot = c, t.slot
	s, rv := c.OpenSession(t.slot, t.sessionFlags())
	if rv != pkcs11.CKR_OK {
		return &TokenError{Step: "open session", Call: "C_OpenSession", Err: pkcs11.Error(rv)}
	}
	t.anchor = pkcs11.SessionHandle(s)
	if t.pin != "" {
		if err := t.login(t.anchor); err != nil {
			c.CloseSession(s)
			return err
		}
	}
	return nil
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

// MaxSessions is the bound on the sessions the Token lends at once (see
// Config.MaxSessions), or 0 for none.
func (t *Token) MaxSessions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limit
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "; ")
}

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

// sessionFlags are the C_OpenSession flags of the Token's sessions.
func (t *Token) sessionFlags() uint {
	if t.readOnly {
		return pkcs11.CKF_SERIAL_SESSION
	}
	return pkcs11.CKF_SERIAL_SESSION | pkcs11.CKF_RW_SESSION
}

// Info is the token's CK_TOKEN_INFO, read when it was opened.
func (t *Token) Info() pkcs11.TokenInfo { return t.info }

// SlotID is the ID of the token's slot.
func (t *Token) SlotID() uint { return t.slot }

// Close destroys nothing but closes the token's sessions, which ends the
// session objects they made, and releases the module. Closing a Token
// twice, or a nil *Token (what Open returns with an error), does nothing.
func (t *Token) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	all, anchor := t.all, t.anchor
	t.all, t.idle = nil, nil
	for _, w := range t.waiters {
		close(w) // they find the Token closed
	}
	t.waiters = nil
	t.mu.Unlock()
	for s := range all {
		t.mod.ck.CloseSession(uint(s))
	}
	t.mod.ck.CloseSession(uint(anchor))
	t.mod.release()
	t.logClosed()
	return nil
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
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, ErrClosed
		}
		if t.losses != t.restored || t.loginErr != nil {
			t.mu.Unlock()
			if err := t.restore(); err != nil {
				return nil, err
			}
			continue
		}
		losses := t.losses
		n := len(t.idle)
		if n == 0 {
			if t.limit == 0 || len(t.all)+t.opening < t.limit {
				t.opening++
				t.mu.Unlock()
				s, full, err := t.openSession(losses)
				if !full {
					return s, err
				}
				continue // the bound was lowered: wait for a session
			}
			if err := t.wait(ctx); err != nil {
				return nil, err
			}
			continue
		}
		s := t.idle[n-1]
		t.idle[n-1] = nil
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if s.seen != losses {
			if _, rv := t.mod.ck.GetSessionInfo(uint(s.h)); lostSession(ckErr(rv)) {
				t.forget(s.h)
				continue
			}
			s.seen = losses
		}
		return s, nil
	}
}

// wait waits, t.mu held (and released on return), until a session may be
// free: released, or forgotten so that another may be opened. A waiter
// whose ctx ends after it was woken passes the wake-up on.
func (t *Token) wait(ctx context.Context) error {
	w := make(chan struct{}, 1)
	t.waiters = append(t.waiters, w)
	hook := t.onWait
	t.mu.Unlock()
	if hook != nil {
		hook()
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		t.mu.Lock()
		defer t.mu.Unlock()
		for i, x := range t.waiters {
			if x == w {
				t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
				return ctx.Err()
			}
		}
		t.wakeLocked() // woken meanwhile: the session goes to the next
		return ctx.Err()
	}
}

// wakeLocked wakes the first waiter, if any; t.mu is held.
func (t *Token) wakeLocked() {
	if len(t.waiters) == 0 {
		return
	}
	w := t.waiters[0]
	t.waiters[0] = nil
	t.waiters = t.waiters[1:]
	w <- struct{}{}
}

// openSession opens a session for the pool, a place for it reserved
// (t.opening). full says the token answered CKR_SESSION_COUNT while the
// Token had sessions open: the bound is lowered to them, and the caller
// waits for one of them instead of failing.
func (t *Token) openSession(losses uint64) (s *session, full bool, err error) {
	sh, rv := t.mod.ck.OpenSession(t.slot, t.sessionFlags())
	t.mu.Lock()
	defer t.mu.Unlock()
	t.opening--
	if rv != pkcs11.CKR_OK {
		if rv == pkcs11.CKR_SESSION_COUNT && !t.closed && len(t.all) > 0 {
			t.limit = len(t.all)
			return nil, true, nil
		}
		t.wakeLocked() // the place reserved is free again
		return nil, false, &TokenError{Step: "open session", Call: "C_OpenSession", Err: pkcs11.Error(rv)}
	}
	h := pkcs11.SessionHandle(sh)
	if t.closed {
		t.mod.ck.CloseSession(sh)
		return nil, false, ErrClosed
	}
	t.all[h] = true
	return &session{token: t, ck: t.mod.ck, h: h, seen: losses}, false, nil
}

// release returns s to the pool, unless a call said it is gone: then it is
// forgotten, and the next session() restores what the loss may have taken.
// Either way a waiter, if any, is woken.
func (t *Token) release(s *session) {
	t.calls.Add(int64(s.calls))
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.lost != 0 {
		t.losses++
	}
	if t.closed {
		return
	}
	if s.lost == lossSession {
		delete(t.all, s.h)
		t.wakeLocked()
		return
	}
	// The session struct goes back to the pool with the session: the next
	// operation reuses it, nothing allocated.
	s.calls, s.strategy, s.lost, s.madeCall, s.madeMech = 0, "", 0, "", 0
	s.ahead.n, s.ahead.done = 0, false
	t.idle = append(t.idle, s)
	t.wakeLocked()
}

// forget drops a session the token no longer knows. It is not closed: its
// handle may already name a session opened since.
func (t *Token) forget(h pkcs11.SessionHandle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, h)
	t.wakeLocked()
}

// restore re-opens the anchor session if the token lost it, and logs in
// again with the Token's PIN if the login was lost with it. A C_Login that
// fails is never retried (tokens lock PINs after a few wrong tries): the
// Token answers its error from then on.
func (t *Token) restore() error {
	t.restoreMu.Lock()
	defer t.restoreMu.Unlock()
	t.mu.Lock()
	losses, done, anchor, loginErr := t.losses, t.losses == t.restored, t.anchor, t.loginErr
	t.mu.Unlock()
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
		t.mu.Lock()
		closed := t.closed
		if !closed {
			t.anchor = anchor
		}
		t.mu.Unlock()
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
			t.mu.Lock()
			t.loginErr = err
			t.mu.Unlock()
			return err
		}
	}
	t.mu.Lock()
	t.restored = losses
	t.mu.Unlock()
	return nil
}

func loggedIn(state uint) bool {
	switch state {
	case pkcs11.CKS_RO_USER_FUNCTIONS, pkcs11.CKS_RW_USER_FUNCTIONS, pkcs11.CKS_RW_SO_FUNCTIONS:
		return true
	}
	return false
}

// contextDone returns ctx's error, if it is done, before a call is made.
func contextDone(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
		return nil
	}
}

// Calls is the number of PKCS#11 calls made through the Token's sessions so
// far (opening and logging in aside): for reports such as calls per row.
func (t *Token) Calls() int64 { return t.calls.Load() }
