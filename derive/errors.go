package derive

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// Sentinel errors. Every error p11derive returns wraps one of them, so that
// callers can branch with errors.Is; the typed errors below carry the details.
// Errors from the token also wrap its CKR code as a pkcs11.Error:
//
//	errors.Is(err, pkcs11.Error(pkcs11.CKR_KEY_TYPE_INCONSISTENT))
var (
	// ErrInvalidInput: the request is malformed (length, IV, key type,
	// unknown name). Detected before any PKCS#11 call.
	ErrInvalidInput = errors.New("invalid input")
	// ErrKeyType: the base key is not a key of the function's cipher.
	ErrKeyType = errors.New("base key type does not fit the function")
	// ErrMissingAttribute: the base key lacks an attribute (CKA_DERIVE,
	// CKA_SIGN, ...) that every strategy able to compute the function needs.
	ErrMissingAttribute = errors.New("base key lacks a required attribute")
	// ErrUnsupported: the token offers no strategy for the function.
	ErrUnsupported = errors.New("no strategy can compute the function on this token")
	// ErrWeakKey: the token made a derived key weaker than requested (for
	// example extractable or not sensitive); it was destroyed.
	ErrWeakKey = errors.New("token made a weaker key than requested")
	// ErrNotFound: no token, or no key, matches the selection.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: more than one token, or key, matches the selection.
	ErrAmbiguous = errors.New("ambiguous selection")
	// ErrToken: a PKCS#11 call failed; see [TokenError].
	ErrToken = errors.New("token error")
	// ErrClosed: the Token was closed.
	ErrClosed = errors.New("token closed")
)

// InputError describes bad input. It matches [ErrInvalidInput].
type InputError struct {
	Field   string // what was wrong: "data", "iv", "len", "kdf", ...
	Problem string
}

func (e *InputError) Error() string { return "p11derive: " + e.Field + ": " + e.Problem }

// Is makes errors.Is(err, ErrInvalidInput) true.
func (e *InputError) Is(target error) bool { return target == ErrInvalidInput }

func inputErr(field, format string, args ...any) error {
	return &InputError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// KeyError says why a base key cannot be used. It matches Reason
// ([ErrKeyType], [ErrMissingAttribute] or [ErrUnsupported]).
type KeyError struct {
	Key     string // the key's label, or its handle
	Reason  error
	Problem string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("p11derive: base key %s: %s", e.Key, e.Problem)
}

func (e *KeyError) Unwrap() error { return e.Reason }

// TokenError is a failed PKCS#11 call. It unwraps to the token's return
// value (a pkcs11.Error holding the CKR code) and matches [ErrToken].
type TokenError struct {
	Strategy Strategy // the strategy that made the call, "" outside one
	Step     string   // what the call was for, e.g. "derive DK"
	Call     string   // the PKCS#11 function, e.g. "C_DeriveKey"
	Err      error    // the token's answer, usually a pkcs11.Error
	// Hint, when set, says what the answer means here and what to do,
	// e.g. that the token takes no login.
	Hint string
}

func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("p11derive: ")
	if e.Strategy != "" {
		b.WriteString(string(e.Strategy))
		b.WriteString(": ")
	}
	b.WriteString(e.Step)
	b.WriteString(": ")
	b.WriteString(e.Call)
	b.WriteString(": ")
	b.WriteString(ckrText(e.Err))
	if e.Hint != "" {
		b.WriteString(": ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

func (e *TokenError) Unwrap() []error { return []error{e.Err, ErrToken} }

// ckrText is err's text; a CKR code the pkcs11 package has no name for
// (a vendor's, or garbage) is given in hex and said to be unknown.
func ckrText(err error) string {
	var ck pkcs11.Error
	if errors.As(err, &ck) {
		if msg := err.Error(); strings.HasSuffix(msg, ": ") || strings.HasSuffix(msg, ":") {
			return fmt.Sprintf("CKR 0x%X (unknown: not a PKCS#11 3.0 return value)", uint(ck))
		}
	}
	return err.Error()
}

// CKR returns the token's return value, or 0 if the failure was not a
// PKCS#11 return value.
func (e *TokenError) CKR() uint {
	var ck pkcs11.Error
	if errors.As(e.Err, &ck) {
		return uint(ck)
	}
	return 0
}

// UnsupportedError says why no strategy could run: for each strategy that
// could compute the function, why it could not on this token and key.
// It matches [ErrUnsupported].
type UnsupportedError struct {
	Function string
	Reasons  []StrategyReason
	// Substitutes are other functions this token could compute from the
	// base key (judged from its mechanism list and the key's attributes),
	// for a caller who may allow one (Request.Allow).
	Substitutes []string
	// Unlisted is set when the token, as the module it was reached
	// through shows it, lists the mechanisms of none of the strategies
	// that compute Function (Auto only): for each of them, the
	// mechanisms it needs that the module does not list. A layer between
	// p11derive and the token can hide mechanisms the token has: p11-kit's
	// RPC (p11-kit-client.so) drops every mechanism whose parameters it
	// cannot carry, the *_ENCRYPT_DATA, CBC, MAC_GENERAL, CMAC and CTR
	// families among them.
	Unlisted []StrategyMechanisms
	// Module is the path of that module (set with Unlisted).
	Module string
}

// StrategyMechanisms names mechanisms of one strategy.
type StrategyMechanisms struct {
	Strategy   Strategy
	Mechanisms []uint
}

// StrategyReason is why one strategy could not compute one function.
type StrategyReason struct {
	Function string
	Strategy Strategy
	Reason   string
	Err      error // the error behind Reason
}

func (e *UnsupportedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "p11derive: no strategy can compute %s here", e.Function)
	if len(e.Unlisted) > 0 {
		fmt.Fprintf(&b, ": the token, as seen through module %q, lists none of the mechanisms the exact strategies need (", e.Module)
		for i, u := range e.Unlisted {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(string(u.Strategy) + ": ")
			for j, m := range u.Mechanisms {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString(ckm.Name(m))
			}
		}
		b.WriteString(")")
	}
	// What the token does not list or run first, then what the base key
	// lacks.
	reasons := make([]StrategyReason, 0, len(e.Reasons))
	for pass := 0; pass < 2; pass++ {
		for _, r := range e.Reasons {
			if attributeOnly(r.Err) == (pass == 1) {
				reasons = append(reasons, r)
			}
		}
	}
	for i, r := range reasons {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if r.Function != "" && r.Function != e.Function {
			b.WriteString(r.Function + " ")
		}
		if r.Strategy != "" {
			b.WriteString(string(r.Strategy) + ": ")
		}
		b.WriteString(strings.TrimPrefix(r.Reason, "p11derive: "))
	}
	if len(e.Substitutes) > 0 {
		fmt.Fprintf(&b, "; different functions this token lists the mechanisms for, if allowed: %s", strings.Join(e.Substitutes, ", "))
	}
	return b.String()
}

// attributeOnly reports whether err is only the base key lacking an
// attribute (no mechanism problem).
func attributeOnly(err error) bool {
	return errors.Is(err, ErrMissingAttribute) && !errors.Is(err, ErrUnsupported)
}

// Is matches ErrUnsupported, and also ErrMissingAttribute when every
// strategy was ruled out by a missing attribute of the base key.
func (e *UnsupportedError) Is(target error) bool {
	switch target {
	case ErrUnsupported:
		return true
	case ErrMissingAttribute:
		if len(e.Reasons) == 0 {
			return false
		}
		for _, r := range e.Reasons {
			if !errors.Is(r.Err, ErrMissingAttribute) {
				return false
			}
		}
		return true
	}
	return false
}

// WeakKeyError lists how the token's new key fell short of the request.
// The key was destroyed (unless the error also says it could not be). It
// matches [ErrWeakKey].
//
// A key weaker only in CKA_SENSITIVE and CKA_EXTRACTABLE is tightened with
// C_SetAttributeValue rather than refused, unless the request was strict
// (Request.StrictAttributes, KeySpec.StrictAttributes); a WeakKeyError then
// means the token refused to tighten it, or the request was strict.
type WeakKeyError struct {
	Strategy  Strategy // the strategy that made the key, "" outside one
	Call      string   // the call that made it: "C_UnwrapKey", "C_DeriveKey"...
	Mechanism string   // its mechanism (CKM_ name), "" for C_CreateObject
	Problems  []string
	// Strict: the request refused tightening (StrictAttributes), and the
	// key fell short only in CKA_SENSITIVE and CKA_EXTRACTABLE.
	Strict bool
	// Err is the failure of the C_SetAttributeValue that would have
	// tightened the key, if any.
	Err error
}

func (e *WeakKeyError) Error() string {
	var b strings.Builder
	b.WriteString("p11derive: ")
	if e.Strategy != "" {
		b.WriteString(string(e.Strategy) + ": ")
	}
	if e.Call != "" {
		b.WriteString(e.Call)
		if e.Mechanism != "" {
			b.WriteString(" with " + e.Mechanism)
		}
		b.WriteString(": ")
	}
	b.WriteString("token made a weaker key than requested (destroyed): ")
	b.WriteString(strings.Join(e.Problems, ", "))
	if e.Strict {
		b.WriteString(" (strict attributes: not tightened)")
	}
	if e.Err != nil {
		b.WriteString("; tightening it failed: " + strings.TrimPrefix(e.Err.Error(), "p11derive: "))
	}
	return b.String()
}

func (e *WeakKeyError) Is(target error) bool { return target == ErrWeakKey }

func (e *WeakKeyError) Unwrap() error { return e.Err }

// LeftBehindError is a failure after the token made a key, whose
// destruction failed too: the key may still be in the token. It unwraps
// to both errors.
type LeftBehindError struct {
	Err     error // why the key was to be destroyed
	Destroy error // why it could not be
	Handle  pkcs11.ObjectHandle
}

func (e *LeftBehindError) Error() string {
	return fmt.Sprintf("%s; and destroying the new key (handle %d) failed, it may be left in the token: %s",
		strings.Replace(e.Err.Error(), " (destroyed)", "", 1), e.Handle, strings.TrimPrefix(e.Destroy.Error(), "p11derive: "))
}

func (e *LeftBehindError) Unwrap() []error { return []error{e.Err, e.Destroy} }
