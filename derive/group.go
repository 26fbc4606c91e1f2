package derive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// A Group is several Tokens that hold the same base key — two HSMs, or
// more, loaded with one key — used as one: Derive sends each request to
// the member with the fewest derivations in flight, takes a member that
// fails as a device out, derives on another one instead, and brings the
// failed member back once a health check passes. It is what the client
// libraries of HSM clusters do for their own HSMs, over any PKCS#11
// tokens.
//
// It is called a Group, not a pool: the Token's own pool is of sessions,
// inside one token; a Group's members are whole tokens.
//
// Its invariants:
//
//   - Same key: NewGroup finds the base key on every member by a Selector
//     (label and/or CKA_ID) and computes its check value in each token
//     (CheckValueBy, ECB convention); a member whose key differs is a
//     *MismatchError naming both tokens, and no Group is made. A health
//     check proves the key again before a member comes back.
//   - At most once: a derivation that failed on a member left nothing
//     there (Token.Derive's promise), so deriving it again on another one
//     makes one DK; a request is retried once, on another member, and only
//     after a member fault (see below).
//   - No persistent key twice: a Group derives session keys only. A
//     Request with Persistent is refused before any call (ErrInvalidInput):
//     a token object derived on one member exists on that member alone,
//     and a retry after a failure that left its fate unknown could make it
//     twice. Persistent keys are derived on one Token.
//
// A member fault is an error saying the member, not the request, failed:
// the token's CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_DEVICE_MEMORY,
// CKR_TOKEN_NOT_PRESENT, CKR_TOKEN_NOT_RECOGNIZED, CKR_SESSION_CLOSED,
// CKR_SESSION_HANDLE_INVALID, CKR_CRYPTOKI_NOT_INITIALIZED or
// CKR_KEY_HANDLE_INVALID (the base key's handle no longer valid there, as
// after a token is put back), or the member Token closed. CKR_GENERAL_ERROR
// is not one (SoftHSM2 answers it for requests it cannot do), nor is any
// refusal of the request, a bad input or the caller's context: those are
// returned as they are, and the member stays in.
//
// Health check: a member taken out is checked again RetryAfter after its
// fault (GroupConfig.RetryAfter; DefaultRetryAfter by default) and after
// each failed check: C_GetSessionInfo (which restores the Token's lost
// sessions and login, see Token), the base key found again by its Selector
// (its handle may have changed) and its check value computed again, which
// must be the Group's. The check is lazy: the first Derive after it is due
// starts it in the background, and goes on to a member that is up; when
// no member is up, Derive runs the due checks itself before giving up with
// ErrNoMember.
//
// A Group does not own its members: Close ends its health checks, and the
// caller closes the Tokens.
type Group struct {
	members []*member
	sel     Selector
	kcv     []byte
	first   *Key // the first member's base key when the Group was made: what requests are validated against
	retry   time.Duration

	mu     sync.Mutex // guards the members' state
	closed bool
	bg     context.Context // cancelled by Close: ends background checks
	stop   context.CancelFunc
	wg     sync.WaitGroup // background checks running
}

// member is a Token of a Group, and its state (guarded by Group.mu).
type member struct {
	tok      *Token
	name     string
	base     *Key // the base key there, as last found
	inFlight int
	derived  int64
	down     bool
	err      error     // the fault that took it out, or the last failed check
	due      time.Time // when the next health check is due (down only)
	checking bool
}

// DefaultRetryAfter is how long a member taken out of a Group stays out
// before its first health check, and between checks, unless
// GroupConfig.RetryAfter says otherwise.
const DefaultRetryAfter = 5 * time.Second

// GroupConfig says which Tokens make a Group, and which key they share.
type GroupConfig struct {
	// Members are the Tokens, open: at least one, no token twice.
	Members []*Token
	// Base selects the base key on every member, by CKA_LABEL and/or
	// CKA_ID; each member must hold exactly one such key.
	Base Selector
	// RetryAfter is how long a member taken out stays out before a health
	// check, and between checks; 0 means DefaultRetryAfter.
	RetryAfter time.Duration
}

// Sentinel errors of a Group.
var (
	// ErrMismatch: two members of a Group hold different base keys.
	ErrMismatch = errors.New("group members hold different base keys")
	// ErrNoMember: every member of a Group is out.
	ErrNoMember = errors.New("no member of the group is up")
)

// MismatchError is two members whose base keys differ: in check value
// (computed in each token), type or length. It matches [ErrMismatch].
type MismatchError struct {
	Key            string // the Selector, as text
	First, Other   string // the tokens, by label, serial and slot
	FirstKCV       []byte // the check values (public), nil if Problem says why not
	OtherKCV       []byte
	Problem        string // what differs, when it is not the check value
	FirstN, OtherN int    // the members' places in GroupConfig.Members, from 1
}

func (e *MismatchError) Error() string {
	what := e.Problem
	if what == "" {
		what = fmt.Sprintf("check value %x on member %d, %x on member %d", e.FirstKCV, e.FirstN, e.OtherKCV, e.OtherN)
	}
	return fmt.Sprintf("p11derive: group: members %d (%s) and %d (%s) hold different keys as the %s: %s",
		e.FirstN, e.First, e.OtherN, e.Other, e.Key, what)
}

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// MemberError is the error of one member of a Group: a member fault that
// took it out, or what NewGroup met there (a base key not found, say). It
// unwraps to the error (so errors.Is finds the CKR code or the sentinel).
type MemberError struct {
	Member string // the token, by label, serial and slot
	Err    error
}

func (e *MemberError) Error() string {
	return "p11derive: group member " + e.Member + ": " + strings.TrimPrefix(e.Err.Error(), "p11derive: ")
}

func (e *MemberError) Unwrap() error { return e.Err }

// retryError is a request that failed on a member and again on the
// retry (or found no member to retry on). It unwraps to both errors.
type retryError struct{ first, second error }

func (e *retryError) Error() string {
	return e.first.Error() + "; retried: " + strings.TrimPrefix(e.second.Error(), "p11derive: ")
}

func (e *retryError) Unwrap() []error { return []error{e.first, e.second} }

// GroupResult is a key derived by a Group: the Result, and the member
// whose token holds DK. DK is a key object of that token only: use Member
// for it (CheckValue, Wrap, Destroy) or Group.Destroy.
type GroupResult struct {
	*Result
	Member *Token
}

// MemberStatus is a member's state, as Group.Members reports it.
type MemberStatus struct {
	Token    *Token
	Name     string // label, serial and slot
	Up       bool
	InFlight int   // derivations under way there
	Derived  int64 // derivations it completed for the Group
	Err      error // why it is out (the fault, or the last failed check)
}

// memberName names a token in messages: label, serial and slot.
func memberName(t *Token) string {
	return fmt.Sprintf("token %q (serial %q, slot %d)", trimInfo(t.info.Label), trimInfo(t.info.SerialNumber), t.slot)
}

// NewGroup makes a Group of cfg.Members: it finds the base key on each
// and proves it is the same key by its check value (a *MismatchError
// otherwise). Bad configuration (no member, a nil or repeated member, an
// empty Selector, a negative RetryAfter) is refused before any call.
func NewGroup(ctx context.Context, cfg GroupConfig) (*Group, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Group{sel: cfg.Base, retry: cfg.RetryAfter}
	if g.retry == 0 {
		g.retry = DefaultRetryAfter
	}
	for i, t := range cfg.Members {
		m := &member{tok: t, name: memberName(t)}
		k, kcv, err := g.prove(ctx, t)
		if err != nil {
			var me *MismatchError
			if errors.As(err, &me) {
				me.First, me.FirstN, me.Other, me.OtherN = g.members[0].name, 1, m.name, i+1
				return nil, me
			}
			return nil, &MemberError{Member: m.name, Err: err}
		}
		if i == 0 {
			g.kcv, g.first = kcv, k
		}
		m.base = k
		g.members = append(g.members, m)
	}
	g.bg, g.stop = context.WithCancel(context.Background())
	return g, nil
}

func (cfg *GroupConfig) validate() error {
	if len(cfg.Members) == 0 {
		return inputErr("group", "no member token given")
	}
	for i, t := range cfg.Members {
		if t == nil {
			return inputErr("group", "member %d is nil", i+1)
		}
		for j, u := range cfg.Members[:i] {
			if u.mod == t.mod && u.slot == t.slot {
				return inputErr("group", "members %d and %d are the same token (%s): a group of one token twice would count it as two", j+1, i+1, memberName(t))
			}
		}
	}
	if cfg.Base.Label == "" && len(cfg.Base.ID) == 0 {
		return inputErr("base", "no base key label or ID given")
	}
	if cfg.RetryAfter < 0 {
		return inputErr("retry-after", "RetryAfter is %v: give 0 for the default, or a positive interval", cfg.RetryAfter)
	}
	return nil
}

// prove finds the base key on t and computes its check value; once the
// Group has one (g.kcv), a key that differs is a *MismatchError (the
// caller names the tokens).
func (g *Group) prove(ctx context.Context, t *Token) (*Key, []byte, error) {
	k, err := t.Find(ctx, g.sel)
	if err != nil {
		return nil, nil, err
	}
	kcv, err := t.CheckValueBy(ctx, k, KCVECB)
	if err != nil {
		return nil, nil, err
	}
	if g.kcv == nil {
		return k, kcv.Value, nil
	}
	first := g.first
	switch {
	case k.Type != first.Type:
		return nil, nil, &MismatchError{Key: g.sel.String(), Problem: fmt.Sprintf("key type %s, and %s", ckm.KeyType(first.Type), ckm.KeyType(k.Type))}
	case k.Len != first.Len && k.Len != 0 && first.Len != 0:
		return nil, nil, &MismatchError{Key: g.sel.String(), Problem: fmt.Sprintf("%d bytes, and %d", first.Len, k.Len)}
	case string(kcv.Value) != string(g.kcv):
		return nil, nil, &MismatchError{Key: g.sel.String(), FirstKCV: g.kcv, OtherKCV: kcv.Value}
	}
	return k, kcv.Value, nil
}

// CheckValue is the base key's check value (ECB convention), the same on
// every member: proven when the Group was made, and by every health check
// since. It makes no call.
func (g *Group) CheckValue() []byte { return append([]byte(nil), g.kcv...) }

// Derive derives DK on a member, as Token.Derive does there, and says
// which member holds it. Requests go to the member with the fewest
// derivations in flight (of those equally busy, the one that did fewer).
// On a member fault (see Group) the member is taken out and the request is
// derived again, once, on another member; the error of a request that
// failed twice names both faults. With every member out, the error
// matches ErrNoMember and names each member's fault.
//
// A request for a persistent key (r.Persistent) is refused before any
// call: see Group. Other bad input is refused before any call as by
// Token.Derive.
func (g *Group) Derive(ctx context.Context, r Request) (*GroupResult, error) {
	if r.Persistent {
		return nil, inputErr("persistent", "a group derives session keys only: a token object would exist on one member alone, and a retry could make it twice; derive persistent keys on one Token")
	}
	if err := validate(g.first, &r); err != nil {
		return nil, err
	}
	var tried *member
	var first error
	for {
		m, base, err := g.pick(ctx, tried)
		if err != nil {
			if first != nil {
				return nil, &retryError{first: first, second: err}
			}
			return nil, err
		}
		res, err := m.tok.Derive(ctx, base, r)
		g.done(m, err == nil)
		if err == nil {
			return &GroupResult{Result: res, Member: m.tok}, nil
		}
		if !memberFault(err) || ctx.Err() != nil {
			return nil, err
		}
		me := g.takeOut(m, err)
		if first != nil {
			return nil, &retryError{first: first, second: me}
		}
		first, tried = me, m
	}
}

// pick takes the least busy member that is up, other than not, and counts
// a derivation in flight there. Down members due for a health check get
// one: in the background when a member is up, else here, before giving
// up.
func (g *Group) pick(ctx context.Context, not *member) (*member, *Key, error) {
	for pass := 0; ; pass++ {
		g.mu.Lock()
		if g.closed {
			g.mu.Unlock()
			return nil, nil, fmt.Errorf("p11derive: group closed: %w", ErrClosed)
		}
		now := time.Now()
		var best *member
		var due []*member
		for _, m := range g.members {
			if m.down {
				if !m.checking && !now.Before(m.due) {
					m.checking = true
					due = append(due, m)
				}
				continue
			}
			if m != not && (best == nil || m.inFlight < best.inFlight || (m.inFlight == best.inFlight && m.derived < best.derived)) {
				best = m
			}
		}
		if best != nil {
			best.inFlight++
			base := best.base
			for _, m := range due {
				g.wg.Add(1)
				go func() {
					defer g.wg.Done()
					g.check(g.bg, m)
				}()
			}
			g.mu.Unlock()
			return best, base, nil
		}
		g.mu.Unlock()
		if len(due) == 0 || pass > 0 {
			for _, m := range due {
				g.checked(m, nil, ErrNoMember) // not run: due again at once
			}
			return nil, nil, g.noMember(not)
		}
		for _, m := range due {
			g.check(ctx, m)
		}
	}
}

// done counts a derivation on m as ended.
func (g *Group) done(m *member, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m.inFlight--
	if ok {
		m.derived++
	}
}

// takeOut takes m out after the fault err (until a health check passes,
// RetryAfter from now) and returns the error naming it.
func (g *Group) takeOut(m *member, err error) error {
	g.mu.Lock()
	was := m.down
	if !was {
		m.down, m.due = true, time.Now().Add(g.retry)
	}
	m.err = err
	g.mu.Unlock()
	if !was && m.tok.log != nil {
		m.tok.log.LogAttrs(context.Background(), slog.LevelWarn, "p11derive: group member taken out",
			slog.String("token", trimInfo(m.tok.info.Label)), slog.String("serial", trimInfo(m.tok.info.SerialNumber)),
			slog.Duration("retry_after", g.retry), slog.String("error", strings.TrimPrefix(err.Error(), "p11derive: ")))
	}
	return &MemberError{Member: m.name, Err: err}
}

// check runs m's health check (see Group) and records its outcome.
func (g *Group) check(ctx context.Context, m *member) {
	t := m.tok
	var k *Key
	_, err := t.SessionState(ctx)
	if err == nil {
		k, _, err = g.prove(ctx, t)
	}
	if err != nil && ctx.Err() != nil {
		// The caller gave up (or the Group closed): no verdict, the check
		// is due again at once.
		g.checked(m, nil, ErrNoMember)
		return
	}
	var me *MismatchError
	if errors.As(err, &me) {
		me.First, me.FirstN, me.Other = g.members[0].name, 1, m.name
		for i, x := range g.members {
			if x == m {
				me.OtherN = i + 1
			}
		}
	}
	g.checked(m, k, err)
	if t.log != nil && err == nil {
		t.log.LogAttrs(context.Background(), slog.LevelInfo, "p11derive: group member back",
			slog.String("token", trimInfo(t.info.Label)), slog.String("serial", trimInfo(t.info.SerialNumber)))
	}
}

// checked records a health check of m: back up with its base key k, or
// still out after err (the next check RetryAfter from now, or at once if
// err is ErrNoMember: the check did not run).
func (g *Group) checked(m *member, k *Key, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m.checking = false
	switch {
	case err == nil:
		m.down, m.err, m.base = false, nil, k
	case err == ErrNoMember:
	default:
		m.err, m.due = err, time.Now().Add(g.retry)
	}
}

// noMember is the error of a request no member could take: every member's
// fault, or the one not to retry on.
func (g *Group) noMember(not *member) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var parts []string
	for i, m := range g.members {
		switch {
		case m.down && m.err != nil:
			parts = append(parts, fmt.Sprintf("member %d, %s: %s", i+1, m.name, strings.TrimPrefix(m.err.Error(), "p11derive: ")))
		case m == not:
			parts = append(parts, fmt.Sprintf("member %d, %s: failed this request", i+1, m.name))
		}
	}
	return fmt.Errorf("p11derive: group of %d tokens: %w (%s)", len(g.members), ErrNoMember, strings.Join(parts, "; "))
}

// Failed tells the Group that err came from an operation on member after
// Derive gave it a key there (its check value, a wrap, ...): if err is a
// member fault, the member is taken out as Derive would have done, and
// Failed reports true — the caller may derive again, and Derive goes to
// another member. Otherwise it changes nothing and reports false.
func (g *Group) Failed(member *Token, err error) bool {
	if member == nil || err == nil || !memberFault(err) {
		return false
	}
	for _, m := range g.members {
		if m.tok == member {
			g.takeOut(m, err)
			return true
		}
	}
	return false
}

// Destroy destroys DK on the member that holds it.
func (g *Group) Destroy(ctx context.Context, res *GroupResult) error {
	if res == nil || res.Result == nil || res.Member == nil {
		return inputErr("key", "no derived key given")
	}
	return res.Member.Destroy(ctx, res.Key)
}

// Members reports each member's state, in the order of
// GroupConfig.Members.
func (g *Group) Members() []MemberStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]MemberStatus, len(g.members))
	for i, m := range g.members {
		out[i] = MemberStatus{Token: m.tok, Name: m.name, Up: !m.down, InFlight: m.inFlight, Derived: m.derived, Err: m.err}
	}
	return out
}

// Close ends the Group's health checks (waiting for those under way) and
// refuses further Derives with ErrClosed. It does not close the members.
// Closing twice does nothing.
func (g *Group) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.mu.Unlock()
	g.stop()
	g.wg.Wait()
	return nil
}

// memberFault reports whether err says the member failed, rather than the
// request (see Group).
func memberFault(err error) bool {
	if errors.Is(err, ErrClosed) {
		return true
	}
	var ck pkcs11.Error
	if !errors.As(err, &ck) {
		return false
	}
	switch ck {
	case pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_MEMORY,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
		pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_SESSION_HANDLE_INVALID,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_KEY_HANDLE_INVALID:
		return true
	}
	return false
}
