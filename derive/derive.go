package derive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// Request says what to derive.
type Request struct {
	// Function is what DK is computed as, e.g.
	// derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}.
	Function Function
	// Data is the public derivation data.
	Data []byte
	// KeyType is DK's type and length. DK takes the leading bytes of the
	// function's output.
	KeyType KeyType

	// Label is DK's CKA_LABEL (optional).
	Label string
	// ID is DK's CKA_ID (optional): with Label, what Token.Find selects
	// keys by.
	ID []byte
	// Persistent makes DK a token object (CKA_TOKEN=true); by default it is
	// a session object that ends with the Token.
	Persistent bool
	// Extractable lets DK be wrapped under another key (it stays
	// CKA_SENSITIVE: its value never leaves the token in the clear).
	Extractable bool
	// Usage is what DK may be used for; zero means DefaultUsage.
	Usage Usage

	// StrictAttributes refuses a DK the token made weaker than asked in
	// CKA_SENSITIVE or CKA_EXTRACTABLE (some tokens ignore both in a
	// template): DK is destroyed and the error is a *WeakKeyError. By
	// default p11derive tightens such a key instead — one
	// C_SetAttributeValue(CKA_SENSITIVE=true, CKA_EXTRACTABLE=false),
	// which PKCS#11 always allows — reads it back, and accepts it if it now
	// meets the request; its CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE
	// then stay false, and the Result carries a warning naming what the
	// token ignored. Any other shortfall (usage, CKA_TOKEN, type, length)
	// is always refused.
	StrictAttributes bool

	// Strategy forces one strategy; Auto (the default) chooses.
	Strategy Strategy

	// Allow names the substitute functions the caller accepts, in order of
	// preference, for when the token cannot compute Function. A substitute
	// gives different keys: the result says which function ran, and its
	// Profile derives the same keys again. Empty (the default) allows none.
	Allow []Function
}

// Result is a derived key and how it was made.
type Result struct {
	// Key is DK, with the attributes the token gave it (read back).
	Key *Key
	// Function is the function DK was computed as: the requested one, or
	// the substitute from Request.Allow that ran.
	Function Function
	// KeyType is DK's type.
	KeyType KeyType
	// Strategy is the strategy that ran.
	Strategy Strategy
	// Calls is the number of PKCS#11 calls the derivation made, reading DK's
	// attributes back included; on a network HSM each is a round trip.
	Calls int
	// Warnings are facts about the request a careful caller wants to know,
	// such as derivation data that made DK (in part) equal to E_K(0).
	Warnings []string
}

// Derive computes DK from the base key and r.Data inside the token and
// returns it as a key object of the token. DK never reaches the host.
//
// Bad input is refused before any PKCS#11 call with an error matching
// ErrInvalidInput, ErrKeyType or ErrMissingAttribute. DK is sensitive,
// non-extractable (unless r.Extractable) and a session object (unless
// r.Persistent); the attributes the token gave it are read back, and a key
// weaker than requested is destroyed and reported as ErrWeakKey — except
// that one the token made weaker only in CKA_SENSITIVE/CKA_EXTRACTABLE is
// tightened, with a warning (see Request.StrictAttributes). On every error
// path, no object is left behind (or the error, a *LeftBehindError, says
// the token would not destroy it).
//
// With a Config.Logger, each call is logged (see Config.Logger).
func (t *Token) Derive(ctx context.Context, base *Key, r Request) (*Result, error) {
	if t.log != nil {
		return t.deriveLogged(ctx, base, r)
	}
	return t.derive(ctx, base, r)
}

// derive is Derive, unlogged.
func (t *Token) derive(ctx context.Context, base *Key, r Request) (*Result, error) {
	return t.deriveInto(ctx, base, r, nil)
}

// deriveInto is derive into d (nil: a new one), and, when d.then is set,
// d.then.run on DK in the session that made it (see DeriveAndWrap).
func (t *Token) deriveInto(ctx context.Context, base *Key, r Request, d *deriveMem) (*Result, error) {
	if err := validate(base, &r); err != nil {
		return nil, err
	}
	if r.Persistent && t.readOnly {
		return nil, inputErr("persistent", "the token was opened read-only (Config.ReadOnly): it can make session keys only")
	}
	for i, f := range r.Allow {
		if f == nil {
			return nil, inputErr("allow", "substitute %d is nil", i+1)
		}
		if err := f.validate(r.Data, r.KeyType); err != nil {
			return nil, fmt.Errorf("p11derive: substitute %s: %w", f.Name(), err)
		}
	}
	var reasons []StrategyReason
	// d holds the request as each function is tried (strategies take it by
	// pointer through an interface, so it lives on the heap), and the
	// Result and Key of the derivation: one allocation for the three.
	if d == nil {
		d = new(deriveMem)
	}
	defer func() { d.req = Request{} }() // keep no reference to the caller's data
	// The requested function first, then the allowed substitutes in order.
	for i := 0; i <= len(r.Allow); i++ {
		f := r.Function
		if i > 0 {
			f = r.Allow[i-1]
		}
		d.req = r
		d.req.Function = f
		rf := &d.req
		if i > 0 {
			if err := f.checkBase(base); err != nil {
				reasons = append(reasons, StrategyReason{Function: f.Name(), Reason: err.Error(), Err: err})
				continue
			}
		}
		if r.Strategy != Auto && !strategyByName(r.Strategy).computes(f) && len(r.Allow) > 0 {
			reasons = append(reasons, StrategyReason{Function: f.Name(), Strategy: r.Strategy,
				Reason: fmt.Sprintf("%s cannot compute %s", r.Strategy, f.Name()), Err: ErrUnsupported})
			continue
		}
		res, err := t.deriveExact(ctx, base, rf, d)
		if err != nil {
			// Declared here, not above: errors.As puts it on the heap.
			var ue *UnsupportedError
			if errors.As(err, &ue) {
				reasons = append(reasons, ue.Reasons...)
				continue
			}
			return nil, err
		}
		if i > 0 {
			res.Warnings = append(res.Warnings, fmt.Sprintf("computed %s, an allowed substitute, not %s: keep the result's Profile to derive the same keys again", f.Name(), r.Function.Name()))
		}
		return res, nil
	}
	ue := &UnsupportedError{Function: r.Function.Name(), Reasons: reasons}
	if r.Strategy == Auto {
		if ue.Unlisted = t.unlisted(r.Function); ue.Unlisted != nil {
			ue.Module = t.mod.path
		}
	}
	if len(r.Allow) == 0 {
		ue.Substitutes = t.substitutes(base, &r)
	}
	return nil, ue
}

// deriveExact computes exactly r.Function, trying its strategies in order.
// When none can run, or the token refused each, the error is an
// *UnsupportedError.
func (t *Token) deriveExact(ctx context.Context, base *Key, r *Request, d *deriveMem) (*Result, error) {
	var warnings []string
	if f, ok := r.Function.(Encrypt); ok && f.zeroBlockInput(r.Data) {
		warnings = append(warnings, "a block of data enters the cipher as the zero block: that block of DK equals E_K(0), whose leading bytes are the base key's public check value")
	}
	var buf [8]assessment // room for every strategy: candidates need no allocation
	cands, err := t.candidates(base, r, buf[:0])
	if err != nil {
		return nil, err
	}
	tmpl := t.template(r)
	var reasons []StrategyReason
	for _, c := range cands {
		if err := contextDone(ctx); err != nil {
			return nil, err
		}
		res, err := t.runStrategy(ctx, c.strategy, base, r, tmpl, d)
		if err == nil {
			if c.unlisted != nil {
				warnings = append(warnings, c.unlisted.Error()+", but ran it")
			}
			res.Warnings = append(warnings, res.Warnings...)
			return res, nil
		}
		if r.Strategy != Auto || !refused(err) {
			return nil, err
		}
		// The token refused what it listed (or did not list): try the next
		// strategy, and remember the refusal for the base key when it
		// cannot depend on this request's data or parameters.
		if keyRefusal(err) {
			mechs, _ := c.needs(r.Function)
			t.memo.fail(base.Handle, c.name(), r.Function.Name(), mechs, err)
		}
		reason := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "p11derive: "), string(c.name())+": ")
		if c.unlisted != nil {
			reason = c.unlisted.Error() + ", and refused it: " + reason
		}
		reasons = append(reasons, StrategyReason{Function: r.Function.Name(), Strategy: c.name(), Reason: reason, Err: err})
	}
	return nil, &UnsupportedError{Function: r.Function.Name(), Reasons: reasons}
}

func validate(base *Key, r *Request) error {
	if r.Function == nil {
		return inputErr("kdf", "no function given")
	}
	if err := r.KeyType.validate(); err != nil {
		return err
	}
	if err := r.Function.validate(r.Data, r.KeyType); err != nil {
		return err
	}
	if r.Strategy != Auto && strategyByName(r.Strategy) == nil {
		return inputErr("strategy", "unknown strategy %q", r.Strategy)
	}
	if base == nil {
		return inputErr("base", "no base key given")
	}
	return r.Function.checkBase(base)
}

// deriveMem is the memory of one Derive: the request as tried, and the
// Result and its Key, allocated together.
type deriveMem struct {
	req  Request
	res  Result
	key  Key
	then afterDerive // run on DK in its session once it is settled, if set
}

// runStrategy runs one strategy in a session of the pool, reads DK back and
// checks it against the request.

func (t *Token) runStrategy(ctx context.Context, st strategy, base *Key, r *Request, tmpl []*pkcs11.Attribute, d *deriveMem) (res *Result, err error) {
	s, err := t.sessionCtx(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	s.strategy = st.name()
	// DK's read-back, for the call that makes DK to make in its crossing.
	s.ahead.n, s.ahead.done = len(ownKeyAttrs), false
	if hasValueLen(r.KeyType.ckk) {
		s.ahead.n++
	}
	defer func() { s.ahead.n, s.ahead.done = 0, false }()
	h, err := st.run(ctx, s, base, r, tmpl)
	if err != nil {
		return nil, err
	}
	// From here DK exists: destroy it on every path but success, panics
	// included.
	defer func() {
		if res == nil && (d.then == nil || !d.then.destroyed()) {
			if derr := s.cleanup("destroy DK after failure", h); derr != nil && err != nil {
				err = &LeftBehindError{Err: err, Destroy: derr, Handle: h}
			}
		}
	}()
	dk := &d.key
	if err := s.settleInto(dk, h, r, "DK"); err != nil {
		return nil, err
	}
	d.res = Result{Key: dk, Function: r.Function, KeyType: r.KeyType, Strategy: st.name(), Calls: s.calls, Warnings: dk.Warnings}
	if d.then != nil {
		if err := d.then.run(ctx, s, dk); err != nil {
			return nil, &afterError{err} // DK is destroyed (above); not a refusal of the strategy
		}
	}
	return &d.res, nil
}

// keep reads back a key just made for r (what names it: "key", "base key")
// and checks it, as settle does; on every failure it destroys the key, and
// a failed destruction is in the error (*LeftBehindError).
func (s *session) keep(h pkcs11.ObjectHandle, r *Request, what string) (*Key, error) {
	k, err := s.settle(h, r, what)
	if err != nil {
		if derr := s.cleanup("destroy the new "+what+" after failure", h); derr != nil {
			return nil, &LeftBehindError{Err: err, Destroy: derr, Handle: h}
		}
		return nil, err
	}
	return k, nil
}

// settle reads back the key h just made for r and checks it against r. A
// key weaker than requested only in CKA_SENSITIVE and/or CKA_EXTRACTABLE is
// tightened (unless r.StrictAttributes): one C_SetAttributeValue, a second
// read-back, and the key is accepted if it now meets the request, with a
// warning. Anything else short of the request is a *WeakKeyError naming the
// strategy, the call and the mechanism that made the key. The caller
// destroys the key on error.
func (s *session) settle(h pkcs11.ObjectHandle, r *Request, what string) (*Key, error) {
	k := new(Key)
	if err := s.settleInto(k, h, r, what); err != nil {
		return nil, err
	}
	return k, nil
}

// cloneID is a copy of a requested CKA_ID (nil, and no allocation, for
// none): the Key does not share the caller's slice.
func cloneID(id []byte) []byte {
	if len(id) == 0 {
		return nil
	}
	return bytes.Clone(id)
}

// settleInto is settle into k (Derive's, allocated with its Result).
func (s *session) settleInto(k *Key, h pkcs11.ObjectHandle, r *Request, what string) error {
	if err := readOwnKeyInto(k, s, h, r.KeyType, r.Label, what); err != nil {
		return err
	}
	k.ID = cloneID(r.ID)
	loose, other := weakness(k, r)
	if len(loose) == 0 && len(other) == 0 {
		return nil
	}
	if len(other) > 0 || r.StrictAttributes {
		return s.weakKey(append(loose, other...), len(other) == 0, nil)
	}
	var fix []*pkcs11.Attribute
	var ignored []string
	if !k.Sensitive {
		fix = append(fix, pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true))
		ignored = append(ignored, "CKA_SENSITIVE=true")
	}
	if k.Extractable && !r.Extractable {
		fix = append(fix, pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
		ignored = append(ignored, "CKA_EXTRACTABLE=false")
	}
	if err := s.setAttributes("tighten the new "+what, h, fix); err != nil {
		return s.weakKey(loose, false, err)
	}
	if err := readOwnKeyInto(k, s, h, r.KeyType, r.Label, what); err != nil {
		return err
	}
	k.ID = cloneID(r.ID)
	if loose, other := weakness(k, r); len(loose) > 0 || len(other) > 0 {
		return s.weakKey(append(append(loose, other...), "still, after C_SetAttributeValue"), false, nil)
	}
	made := s.madeCall
	if s.madeMech != 0 {
		made += " with " + ckm.Name(s.madeMech)
	}
	w := fmt.Sprintf("the token ignored %s in the template of %s: p11derive set %s with C_SetAttributeValue, so %s is sensitive and not extractable now, but CKA_ALWAYS_SENSITIVE=%v and CKA_NEVER_EXTRACTABLE=%v (its value was exposed until then)",
		strings.Join(ignored, " and "), made, plural(len(fix), "it", "them"), what, k.AlwaysSensitive, k.NeverExtractable)
	if s.strategy != "" {
		w = string(s.strategy) + ": " + w
	}
	k.Warnings = append(k.Warnings, w)
	return nil
}

func plural(n int, one, more string) string {
	if n == 1 {
		return one
	}
	return more
}

// weakKey is the error for a new key weaker than asked, naming what made it.
func (s *session) weakKey(problems []string, strict bool, err error) error {
	e := &WeakKeyError{Strategy: s.strategy, Call: s.madeCall, Problems: problems, Err: err, Strict: strict}
	if s.madeMech != 0 {
		e.Mechanism = ckm.Name(s.madeMech)
	}
	return e
}

// checkKey compares a new key's attributes, as the token gave them, with
// the request. A key weaker than requested is an error.
func checkKey(dk *Key, r *Request) error {
	loose, other := weakness(dk, r)
	if p := append(loose, other...); len(p) > 0 {
		return &WeakKeyError{Problems: p}
	}
	return nil
}

// weakness lists how a new key falls short of the request: loose are the
// shortfalls in CKA_SENSITIVE and CKA_EXTRACTABLE (which can be
// tightened), other the rest.
func weakness(dk *Key, r *Request) (loose, other []string) {
	if !dk.Sensitive && dk.known(pkcs11.CKA_SENSITIVE) {
		loose = append(loose, "CKA_SENSITIVE is false")
	}
	if dk.Extractable && !r.Extractable {
		loose = append(loose, "CKA_EXTRACTABLE is true")
	}
	if dk.Token != r.Persistent {
		other = append(other, fmt.Sprintf("CKA_TOKEN is %v", dk.Token))
	}
	if dk.Type != r.KeyType.ckk {
		other = append(other, "CKA_KEY_TYPE is "+ckm.KeyType(dk.Type))
	}
	if dk.Len != 0 && dk.Len != r.KeyType.n {
		other = append(other, fmt.Sprintf("the key is %d bytes", dk.Len))
	}
	for _, cka := range dk.unknown {
		switch cka {
		case pkcs11.CKA_SENSITIVE:
			other = append(other, "CKA_SENSITIVE unreadable")
		case pkcs11.CKA_EXTRACTABLE:
			other = append(other, "CKA_EXTRACTABLE unreadable")
		}
	}
	return loose, other
}

// refused reports whether err is a token's refusal of a mechanism or of a
// key's use with it — worth trying another strategy — rather than a fault.
// Reading DK back or destroying an object is no use of a mechanism: a
// failure there is a fault, whatever the CKR.
func refused(err error) bool {
	var te *TokenError
	if !errors.As(err, &te) || te.Call == "C_GetAttributeValue" || te.Call == "C_DestroyObject" {
		return false
	}
	switch te.CKR() {
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID,
		pkcs11.CKR_FUNCTION_NOT_SUPPORTED, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_TEMPLATE_INCONSISTENT,
		pkcs11.CKR_ATTRIBUTE_VALUE_INVALID, pkcs11.CKR_DATA_LEN_RANGE:
		return true
	}
	return false
}

// keyRefusal reports whether a refusal holds for every request with the
// same base key and strategy: the mechanism is not supported, or the key
// may not be used with it. A refusal about the parameters, the data or the
// template (CKR_MECHANISM_PARAM_INVALID, CKR_DATA_LEN_RANGE,
// CKR_DATA_INVALID, CKR_TEMPLATE_INCONSISTENT, CKR_ATTRIBUTE_VALUE_INVALID)
// may depend on the request — NSS softoken refuses data over 64 bytes with
// CKR_MECHANISM_PARAM_INVALID — and fails that request only.
func keyRefusal(err error) bool {
	var te *TokenError
	if !errors.As(err, &te) {
		return false
	}
	switch te.CKR() {
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT:
		return true
	}
	return false
}
