// Package scheme holds what the standard key-derivation schemes of
// p11derive have in common: the options of a derived key, the result of a
// scheme's derivation (which may take several PKCS#11 derivations), and
// the error a scheme returns when a standard asks for an operation that no
// standard PKCS#11 mechanism performs inside a token.
//
// The schemes themselves live in one package per family:
//
//	derive/emv     EMV ICC master keys (options A and B) and common session keys
//	derive/gp      GlobalPlatform SCP02 and SCP03 session keys, card static key diversification
//	derive/an10922 NXP AN10922 AES-128 key diversification
//	derive/dukpt   ANSI X9.24-3-2017 AES DUKPT
//	derive/tr31    ANSI X9.143 / TR-31 key block protection keys
//
// Every scheme computes its keys inside the token, through the strategy
// engine of package derive (or, where derive has no function for the
// mechanism a scheme needs, one C_DeriveKey with the standard PKCS#11
// mechanism): the host only ever handles the public derivation data. What
// no standard mechanism can do inside a token is refused with an error
// matching [ErrNotComputable], never computed on the host.
//
// [Catalog] lists every scheme and case, with the mechanisms each needs and
// what is refused and why; [Check] adds which of those mechanisms a token
// lists, and package derive/scheme/verify runs each case on a token
// against its known answer (the p11derive command prints both with
// 'p11derive scheme list --token …').
package scheme

import (
	"errors"
	"fmt"

	"github.com/p11derive/p11derive/derive"
)

// Options are the properties of the key a scheme derives. The zero value
// gives a sensitive, non-extractable session object with the scheme's
// default usage.
type Options struct {
	// Label is the derived key's CKA_LABEL (optional).
	Label string
	// Persistent makes the derived key a token object.
	Persistent bool
	// Extractable lets the derived key be wrapped (it stays sensitive).
	Extractable bool
	// Usage is what the derived key may be used for; zero means the
	// scheme's default for that key (each scheme's doc says which).
	Usage derive.Usage
	// Strategy forces one strategy of package derive for the derivations
	// that go through it; Auto (the default) chooses.
	Strategy derive.Strategy
}

// Request builds the derive.Request of a scheme's final key from the
// options, with def as the usage when none is given.
func (o Options) Request(f derive.Function, data []byte, kt derive.KeyType, def derive.Usage) derive.Request {
	u := o.Usage
	if u == 0 {
		u = def
	}
	return derive.Request{Function: f, Data: data, KeyType: kt, Label: o.Label,
		Persistent: o.Persistent, Extractable: o.Extractable, Usage: u, Strategy: o.Strategy}
}

// Result is a key a scheme derived inside the token, and how.
type Result struct {
	// Key is the derived key, with the attributes the token gave it.
	Key *derive.Key
	// KeyType is the derived key's type.
	KeyType derive.KeyType
	// Function names what the last derivation computed ("des3-ecb",
	// "sp800-108-counter", "xor-base-and-data", ...).
	Function string
	// Strategy is the strategy of package derive that made the key
	// ("native" for a C_DeriveKey with the scheme's own mechanism).
	Strategy derive.Strategy
	// Derivations is the number of keys the scheme derived in the token,
	// intermediates included (1 for single-step schemes).
	Derivations int
	// Strategies is the strategy of each derivation, in order (the first
	// derivation from a caller's base key may take a different strategy
	// than those from the scheme's own intermediates, which only derive).
	Strategies []derive.Strategy
	// Calls is every PKCS#11 call the scheme made: the derivations,
	// reading each key's attributes back, and destroying intermediates.
	Calls int
	// Warnings are facts a careful caller wants to know.
	Warnings []string
}

// ErrNotComputable: the scheme, or this case of it, needs an operation that
// no standard PKCS#11 mechanism performs inside a token (such as an XOR of
// two secret values, or a CMAC padding the token's CMAC does not do), or
// one that the token and package derive offer no way to run. The scheme
// refuses rather than compute anything secret on the host. Errors matching
// it also match derive.ErrUnsupported.
var ErrNotComputable = errors.New("not computable inside the token with standard PKCS#11 mechanisms")

// RefusedError says why a scheme refused to derive a key. It matches
// [ErrNotComputable] and derive.ErrUnsupported.
type RefusedError struct {
	Scheme string // "an10922", "tr31 version B", ...
	Reason string
	Err    error // the token's refusal, if it refused a call; else nil
}

func (e *RefusedError) Error() string {
	msg := fmt.Sprintf("p11derive: %s: %s", e.Scheme, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is match ErrNotComputable and derive.ErrUnsupported.
func (e *RefusedError) Is(target error) bool {
	return target == ErrNotComputable || target == derive.ErrUnsupported
}

// Unwrap returns the token's refusal, if any.
func (e *RefusedError) Unwrap() error { return e.Err }

// InputError is a scheme's bad input, refused before any PKCS#11 call. It
// matches derive.ErrInvalidInput.
type InputError struct {
	Scheme  string
	Field   string
	Problem string
}

func (e *InputError) Error() string {
	return fmt.Sprintf("p11derive: %s: %s: %s", e.Scheme, e.Field, e.Problem)
}

// Is makes errors.Is(err, derive.ErrInvalidInput) true.
func (e *InputError) Is(target error) bool { return target == derive.ErrInvalidInput }

// Inputf returns an *InputError.
func Inputf(scheme, field, format string, args ...any) error {
	return &InputError{Scheme: scheme, Field: field, Problem: fmt.Sprintf(format, args...)}
}
