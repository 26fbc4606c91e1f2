package derive

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ck"
	"github.com/p11derive/p11derive/internal/ckm"
)

// capabilities is what the token says it can do, read once and kept for
// the Token's life: the mechanisms C_GetMechanismList lists, and the CKF_
// flags C_GetMechanismInfo gives each mechanism asked about. Strategies
// consult it (listed) before they run; nothing here is a guess from a
// call that failed (that is the memo's).
type capabilities struct {
	ck   *ck.Module
	slot uint

	once  sync.Once
	mechs map[uint]bool
	err   error
	// infos caches C_GetMechanismInfo's flags, read once per mechanism;
	// every derivation reads it, under a read lock that does not serialise
	// them.
	infoMu sync.RWMutex
	infos  map[uint]mechFlags
}

// mechanisms returns the set of mechanisms the token lists, read once.
func (c *capabilities) mechanisms() (map[uint]bool, error) {
	c.once.Do(func() {
		list, rv := c.ck.GetMechanismList(c.slot)
		if rv != pkcs11.CKR_OK {
			c.err = &TokenError{Step: "list mechanisms", Call: "C_GetMechanismList", Err: pkcs11.Error(rv)}
			return
		}
		c.mechs = make(map[uint]bool, len(list))
		for _, m := range list {
			c.mechs[m] = true
		}
	})
	return c.mechs, c.err
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
func (c *capabilities) flagsOf(m uint) (flags uint, ok bool) {
	c.infoMu.RLock()
	f, seen := c.infos[m]
	c.infoMu.RUnlock()
	if seen {
		return f.flags, f.ok
	}
	info, rv := c.ck.GetMechanismInfo(c.slot, m)
	f = mechFlags{info.Flags, rv == pkcs11.CKR_OK}
	c.infoMu.Lock()
	if c.infos == nil {
		c.infos = map[uint]mechFlags{}
	}
	c.infos[m] = f
	c.infoMu.Unlock()
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
func (c *capabilities) listedFor(list map[uint]bool, u mechUse) (listed, flagged bool) {
	if !list[u.mech] {
		return false, false
	}
	if u.flag == 0 {
		return true, true
	}
	f, ok := c.flagsOf(u.mech)
	return true, !ok || f&u.flag == u.flag
}

// listed returns nil if the token lists every mechanism with the flag of
// its use, or a *notListedError naming those it does not list and those it
// lists without the flag.
func (c *capabilities) listed(us ...mechUse) error {
	list, err := c.mechanisms()
	if err != nil {
		return err
	}
	var missing, flagless []string
	for _, u := range us {
		switch listed, flagged := c.listedFor(list, u); {
		case !listed:
			missing = append(missing, ckm.Name(u.mech))
		case !flagged:
			f, _ := c.flagsOf(u.mech)
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
	if err == nil {
		return nil, true
	}
	var nl *notListedError // here, not above: errors.As puts it on the heap
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

// The Token's ways to its capabilities, for the strategies and Plan.

func (t *Token) mechanisms() (map[uint]bool, error) { return t.caps.mechanisms() }

func (t *Token) flagsOf(m uint) (flags uint, ok bool) { return t.caps.flagsOf(m) }

func (t *Token) listedFor(list map[uint]bool, u mechUse) (listed, flagged bool) {
	return t.caps.listedFor(list, u)
}

func (t *Token) listed(us ...mechUse) error { return t.caps.listed(us...) }

// Lists reports whether the token lists the mechanism in C_GetMechanismList.
func (t *Token) Lists(mechanism uint) bool {
	m, err := t.caps.mechanisms()
	return err == nil && m[mechanism]
}

// listsFor reports whether the token lists the mechanism with every bit of
// the CKF_ flag (CKF_UNWRAP...) in its C_GetMechanismInfo, read once per
// mechanism; a token that will not give the info is taken at its list's
// word.
func (t *Token) listsFor(mechanism, flag uint) bool {
	m, err := t.caps.mechanisms()
	if err != nil {
		return false
	}
	_, ok := t.caps.listedFor(m, mechUse{mechanism, flag})
	return ok
}
