package derive

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
	pkcs11uri "github.com/stefanberger/go-pkcs11uri"

	"github.com/p11derive/p11derive/internal/ckm"
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

	// URI is an RFC 7512 PKCS#11 URI such as "pkcs11:token=Payments;serial=1234".
	// Its token, manufacturer, model, serial and slot-id attributes select the
	// token; module-path names the module; pin-value and pin-source are
	// refused (use PIN).
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

	mu     sync.Mutex
	idle   []pooled
	all    map[pkcs11.SessionHandle]bool
	closed bool
	// losses counts the calls that said a session, or the login, was lost
	// (see session.note); restored is its value when the anchor and the
	// login were last checked, and loginErr a C_Login that failed then
	// (never retried).
	losses, restored uint64
	loginErr         error
	restoreMu        sync.Mutex // one restore at a time

	mechOnce sync.Once
	mechs    map[uint]bool
	mechErr  error
	// infos caches C_GetMechanismInfo's flags, read once per mechanism.
	infoMu sync.Mutex
	infos  map[uint]mechFlags

	memo      memo         // what worked and what failed, per base key
	templates sync.Map     // templateShape → []*pkcs11.Attribute
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
		return nil, err
	}
	mod, err := loadModule(modPath, cfg.InitArgs)
	if err != nil {
		return nil, err
	}
	t := &Token{mod: mod, pin: cfg.PIN, readOnly: cfg.ReadOnly, all: map[pkcs11.SessionHandle]bool{}}
	if err := t.open(sel); err != nil {
		mod.release()
		return nil, err
	}
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
		u := pkcs11uri.New()
		if err := u.Parse(cfg.URI); err != nil {
			return s, "", inputErr("uri", "%v", err)
		}
		if _, ok := u.GetPathAttribute("pin-value", false); ok {
			return s, "", inputErr("uri", "a PIN in the URI (pin-value) is refused: give it by environment variable or file")
		}
		if _, ok := u.GetQueryAttribute("pin-value", false); ok {
			return s, "", inputErr("uri", "a PIN in the URI (pin-value) is refused: give it by environment variable or file")
		}
		if _, ok := u.GetQueryAttribute("pin-source", false); ok {
			return s, "", inputErr("uri", "pin-source in the URI is not supported: give the PIN by environment variable or file")
		}
		merge := func(dst *string, attr string) error {
			v, ok := u.GetPathAttribute(attr, false)
			if !ok {
				return nil
			}
			if *dst != "" && *dst != v {
				return inputErr("uri", "%s %q in the URI conflicts with %q", attr, v, *dst)
			}
			*dst = v
			return nil
		}
		for _, m := range []struct {
			dst  *string
			attr string
		}{{&s.label, "token"}, {&s.serial, "serial"}, {&s.manufacturer, "manufacturer"}, {&s.model, "model"}} {
			if err := merge(m.dst, m.attr); err != nil {
				return s, "", err
			}
		}
		if v, ok := u.GetPathAttribute("slot-id", false); ok {
			id, err := strconv.ParseUint(v, 10, 0)
			if err != nil {
				return s, "", inputErr("uri", "slot-id %q is not a number", v)
			}
			if s.slot != nil && *s.slot != uint(id) {
				return s, "", inputErr("uri", "slot-id %d in the URI conflicts with slot %d", id, *s.slot)
			}
			slot := uint(id)
			s.slot = &slot
		}
		if v, ok := u.GetQueryAttribute("module-path", false); ok {
			if mod != "" && mod != v {
				return s, "", inputErr("uri", "module-path %q in the URI conflicts with module %q", v, mod)
			}
			mod = v
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
// session objects they made, and releases the module.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	all, anchor := t.all, t.anchor
	t.all, t.idle = nil, nil
	t.mu.Unlock()
	for s := range all {
		t.mod.ck.CloseSession(uint(s))
	}
	t.mod.ck.CloseSession(uint(anchor))
	t.mod.release()
	return nil
}

// pooled is an idle session, and the Token's losses when it was last known
// to be alive.
type pooled struct {
	h    pkcs11.SessionHandle
	seen uint64
}

// acquire takes a session for an operation of ctx, unless ctx is done: the
// preamble of every Token method that makes PKCS#11 calls.
func (t *Token) acquire(ctx context.Context) (*session, error) {
	if err := contextDone(ctx); err != nil {
		return nil, err
	}
	return t.session()
}

// session takes a session from the pool, opening one if none is idle.
//
// After a call said a session or the login was lost (a session closed
// behind p11derive's back, a token removed and put back), restore first
// re-opens the anchor session and logs in again if needed, and sessions
// pooled before the loss are checked with C_GetSessionInfo: those the token
// no longer knows are forgotten.
func (t *Token) session() (*session, error) {
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
			t.mu.Unlock()
			return t.openSession(losses)
		}
		p := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if p.seen != losses {
			if _, rv := t.mod.ck.GetSessionInfo(uint(p.h)); lostSession(ckErr(rv)) {
				t.forget(p.h)
				continue
			}
		}
		return &session{token: t, ck: t.mod.ck, h: p.h, seen: losses}, nil
	}
}

func (t *Token) openSession(losses uint64) (*session, error) {
	sh, rv := t.mod.ck.OpenSession(t.slot, t.sessionFlags())
	if rv != pkcs11.CKR_OK {
		return nil, &TokenError{Step: "open session", Call: "C_OpenSession", Err: pkcs11.Error(rv)}
	}
	h := pkcs11.SessionHandle(sh)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		t.mod.ck.CloseSession(sh)
		return nil, ErrClosed
	}
	t.all[h] = true
	return &session{token: t, ck: t.mod.ck, h: h, seen: losses}, nil
}

// release returns s to the pool, unless a call said it is gone: then it is
// forgotten, and the next session() restores what the loss may have taken.
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
		return
	}
	t.idle = append(t.idle, pooled{s.h, s.seen})
}

// forget drops a session the token no longer knows. It is not closed: its
// handle may already name a session opened since.
func (t *Token) forget(h pkcs11.SessionHandle) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, h)
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

// mechanisms returns the set of mechanisms the token lists, read once.
func (t *Token) mechanisms() (map[uint]bool, error) {
	t.mechOnce.Do(func() {
		list, rv := t.mod.ck.GetMechanismList(t.slot)
		if rv != pkcs11.CKR_OK {
			t.mechErr = &TokenError{Step: "list mechanisms", Call: "C_GetMechanismList", Err: pkcs11.Error(rv)}
			return
		}
		t.mechs = make(map[uint]bool, len(list))
		for _, m := range list {
			t.mechs[m] = true
		}
	})
	return t.mechs, t.mechErr
}

// mechFlags is what C_GetMechanismInfo said of a mechanism: its CKF_
// flags, or that it would not say (ok false).
type mechFlags struct {
	flags uint
	ok    bool
}

// flagsOf returns the CKF_ flags the token gives a listed mechanism,
// reading C_GetMechanismInfo once per mechanism; ok is false if the token
// would not say.
func (t *Token) flagsOf(m uint) (flags uint, ok bool) {
	t.infoMu.Lock()
	f, seen := t.infos[m]
	t.infoMu.Unlock()
	if seen {
		return f.flags, f.ok
	}
	info, rv := t.mod.ck.GetMechanismInfo(t.slot, m)
	f = mechFlags{info.Flags, rv == pkcs11.CKR_OK}
	t.infoMu.Lock()
	if t.infos == nil {
		t.infos = map[uint]mechFlags{}
	}
	t.infos[m] = f
	t.infoMu.Unlock()
	return f.flags, f.ok
}

// mechUse is a mechanism a strategy calls and the CKF_ flag of that use
// (CKF_DERIVE, CKF_SIGN, CKF_UNWRAP, CKF_ENCRYPT; several bits: all).
type mechUse struct{ mech, flag uint }

// uses pairs a strategy's mechanisms with the flags of their uses.
func uses(mechs, flags []uint) []mechUse {
	out := make([]mechUse, len(mechs))
	for i, m := range mechs {
		out[i] = mechUse{m, flags[i]}
	}
	return out
}

// listedFor reports whether the token lists m with every bit of flag
// (C_GetMechanismList, then C_GetMechanismInfo's flags; a token that will
// not give the info is taken at its list's word).
func (t *Token) listedFor(list map[uint]bool, u mechUse) (listed, flagged bool) {
	if !list[u.mech] {
		return false, false
	}
	if u.flag == 0 {
		return true, true
	}
	f, ok := t.flagsOf(u.mech)
	return true, !ok || f&u.flag == u.flag
}

// listed returns nil if the token lists every mechanism with the flag of
// its use, or a *notListedError naming those it does not list and those it
// lists without the flag.
func (t *Token) listed(us ...mechUse) error {
	list, err := t.mechanisms()
	if err != nil {
		return err
	}
	var missing, flagless []string
	for _, u := range us {
		switch listed, flagged := t.listedFor(list, u); {
		case !listed:
			missing = append(missing, ckm.Name(u.mech))
		case !flagged:
			f, _ := t.flagsOf(u.mech)
			flagless = append(flagless, ckm.Name(u.mech)+" without "+flagNames(u.flag&^f))
		}
	}
	if len(missing) > 0 || len(flagless) > 0 {
		return &notListedError{mechanism: strings.Join(missing, ", "), flagless: strings.Join(flagless, ", ")}
	}
	return nil
}

// flagNames names CKF_ mechanism flags: "CKF_UNWRAP", "CKF_SIGN and CKF_UNWRAP".
func flagNames(f uint) string {
	var names []string
	for _, n := range []struct {
		f    uint
		name string
	}{{pkcs11.CKF_ENCRYPT, "CKF_ENCRYPT"}, {pkcs11.CKF_DECRYPT, "CKF_DECRYPT"}, {pkcs11.CKF_SIGN, "CKF_SIGN"},
		{pkcs11.CKF_VERIFY, "CKF_VERIFY"}, {pkcs11.CKF_WRAP, "CKF_WRAP"}, {pkcs11.CKF_UNWRAP, "CKF_UNWRAP"},
		{pkcs11.CKF_DERIVE, "CKF_DERIVE"}, {pkcs11.CKF_GENERATE, "CKF_GENERATE"}} {
		if f&n.f != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return fmt.Sprintf("CKF(%#x)", f)
	}
	return joinAnd(names)
}

// joinAnd joins "a", "a and b", "a, b and c".
func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// notListedError: the token does not list a mechanism a strategy needs,
// or lists it without the CKF_ flag of the strategy's use of it (flagless).
// Tokens do not always list what they run (NSS softoken's key database slot
// runs CKM_AES_ECB_ENCRYPT_DATA without listing it), so Auto still tries
// such a strategy, after those whose mechanisms are listed — unless the
// base key also lacks an attribute the strategy needs (missing): then it is
// not tried, and the error says both, the mechanism first.
type notListedError struct {
	mechanism string
	flagless  string
	missing   *KeyError
}

func (e *notListedError) Error() string {
	var parts []string
	if e.mechanism != "" {
		parts = append(parts, "the token does not list "+e.mechanism)
	}
	if e.flagless != "" {
		parts = append(parts, "the token lists "+e.flagless)
	}
	msg := strings.Join(parts, "; ")
	if e.missing != nil {
		msg += "; and " + e.missing.Problem
	}
	return msg
}

func (e *notListedError) Is(target error) bool { return target == ErrUnsupported }

// Unwrap is the base key's missing attribute, if any.
func (e *notListedError) Unwrap() error {
	if e.missing == nil {
		return nil
	}
	return e.missing
}

// tryable reports whether err leaves a strategy worth trying anyway: nil,
// or mechanisms not listed (with the base key's attributes all there).
func tryable(err error) (*notListedError, bool) {
	var nl *notListedError
	if err == nil {
		return nil, true
	}
	if errors.As(err, &nl) && nl.missing == nil {
		return nl, true
	}
	return nil, false
}

// needsAttrs is a strategy's check when the base key lacks attributes:
// the listing problem first (lerr, from listed), then the attributes in one
// phrase ("CKM_AES_MAC_GENERAL then CKM_AES_ECB unwrap needs CKA_SIGN and
// CKA_UNWRAP on the base key"). With no attribute missing it returns lerr.
func needsAttrs(base *Key, lerr error, what string, missing []string) error {
	if len(missing) == 0 {
		return lerr
	}
	ke := &KeyError{Key: base.name(), Reason: ErrMissingAttribute,
		Problem: fmt.Sprintf("%s needs %s on the base key", what, joinAnd(missing))}
	var nl *notListedError
	switch {
	case lerr == nil:
		return ke
	case errors.As(lerr, &nl):
		c := *nl
		c.missing = ke
		return &c
	}
	return lerr // the mechanism list could not be read
}

// Lists reports whether the token lists the mechanism in C_GetMechanismList.
func (t *Token) Lists(mechanism uint) bool {
	m, err := t.mechanisms()
	return err == nil && m[mechanism]
}

// ListsFor reports whether the token lists the mechanism with every bit of
// the CKF_ flag (CKF_UNWRAP...) in its C_GetMechanismInfo, read once per
// mechanism; a token that will not give the info is taken at its list's
// word.
func (t *Token) ListsFor(mechanism, flag uint) bool {
	m, err := t.mechanisms()
	if err != nil {
		return false
	}
	_, ok := t.listedFor(m, mechUse{mechanism, flag})
	return ok
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
