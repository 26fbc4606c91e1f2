package derive

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
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
	mod  *module
	slot uint
	info pkcs11.TokenInfo
	pin  string
	// readOnly: sessions without CKF_RW_SESSION (Config.ReadOnly).
	readOnly bool
	log      *slog.Logger // Config.Logger: nil logs nothing

	// The Token's parts, one job each: the sessions lent (pool.go), the
	// login kept across lost sessions (login.go), what the token says it
	// can do (caps.go), what it refused (memo.go), and DK's templates
	// (template.go), the candidates of the last request shape (assessed.go).
	pool      pool          // the sessions lent to operations
	rec       recovery      // the anchor session and the login, restored after a loss
	caps      capabilities  // the mechanisms listed and their flags
	memo      memo          // the strategies refused, per base key
	assessed  assessedCache // the strategies as assessed for the last request shape
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
	t := &Token{mod: mod, pin: cfg.PIN, readOnly: cfg.ReadOnly, log: cfg.Logger}
	t.pool.all = map[pkcs11.SessionHandle]bool{}
	if err := t.open(sel); err != nil {
		mod.release()
		logOpenFailed(cfg.Logger, modPath, sel, err)
		return nil, err
	}
	t.pool.limit = cfg.MaxSessions
	if t.pool.limit == 0 {
		t.pool.limit = tokenLimit(t.info.MaxSessionCount)
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
	t.rec.anchor = pkcs11.SessionHandle(s)
	if t.pin != "" {
		if err := t.login(t.rec.anchor); err != nil {
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
	t.pool.mu.Lock()
	if t.pool.closed {
		t.pool.mu.Unlock()
		return nil
	}
	all, anchor := t.pool.closeLocked(), t.rec.anchor
	t.pool.mu.Unlock()
	for s := range all {
		t.mod.ck.CloseSession(uint(s))
	}
	t.mod.ck.CloseSession(uint(anchor))
	t.mod.release()
	t.logClosed()
	return nil
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
