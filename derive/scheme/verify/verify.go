// Package verify runs every scheme of the catalog (derive/scheme) on a
// token, as the probe runs the strategies: each case derives its keys from
// a throwaway session key of published value (Token.Import), and the check
// value of each derived key, computed in the token, is compared with the
// known answer's — the key of the scheme's published vector, or of a
// software reference written from the standard's text where none was
// found (each case says which). What the token computes is verified; what
// it refuses is said with the token's CKR and the mechanism; a module or
// session failure is an error, not a refusal.
//
// Every key made — test base keys, derived keys, a scheme's intermediates —
// is a session object, destroyed before Run returns, on every path; Run
// makes no token object, so it works on a Token opened with
// derive.Config.ReadOnly. The test keys' values are public (published test
// vectors); nothing here touches a caller's key.
package verify

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/ckm"
)

// Status is what a token did with one case.
type Status string

// The statuses of a check, and of a catalog entry.
const (
	// Verified: the token computed the known answer.
	Verified Status = "verified"
	// Wrong: the token computed a key, but not the known answer's.
	Wrong Status = "wrong"
	// Refused: the token refused a mechanism, a key's use with it or a
	// template (the CKR says which), or lists nothing that computes it.
	Refused Status = "refused"
	// Error: the module or the session failed; the case says nothing
	// about what the token computes.
	Error Status = "error"
	// Partial (entries only): some of the entry's cases were verified,
	// the others refused.
	Partial Status = "partly verified"
	// NotRun (entries only): the catalog entry has nothing to run (not
	// computable inside a token, or not offered).
	NotRun Status = "not run"
)

// Check is the outcome of one case of a catalog entry on the token.
type Check struct {
	Variant string // "option A", "AES-256 master key", "S-ENC"...
	// Source is where the known answer comes from: a published vector,
	// or "software reference (...)".
	Source string
	Status Status
	// Strategy, KDF and Derivations are how the token computed it
	// (Verified and Wrong).
	Strategy    string
	KDF         string
	Derivations int
	// CKR is the token's answer (Refused and Error), when it gave one;
	// Call the PKCS#11 function and Mechanism the mechanism it refused,
	// when the error names them.
	CKR       string
	Call      string
	Mechanism string
	Reason    string
	// Want and Got are the check values that differ (Wrong): of public
	// test keys.
	Want, Got string
}

// EntryResult is a catalog entry and what the token did with its cases.
type EntryResult struct {
	scheme.Entry
	Status Status
	Checks []Check
}

// Run runs every case of the catalog on tok. It fails only if ctx is done;
// each case's failure is in its Check.
func Run(ctx context.Context, tok *derive.Token) ([]EntryResult, error) {
	var out []EntryResult
	for _, e := range scheme.Catalog() {
		r := EntryResult{Entry: e}
		for _, c := range cases {
			if c.scheme != e.Scheme || c.entry != e.Case {
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			r.Checks = append(r.Checks, c.run(ctx, tok, e.Mechanisms))
		}
		r.Status = summary(r.Checks)
		out = append(out, r)
	}
	return out, nil
}

// summary is an entry's status from its checks': the most telling one.
func summary(cs []Check) Status {
	if len(cs) == 0 {
		return NotRun
	}
	n := map[Status]int{}
	for _, c := range cs {
		n[c.Status]++
	}
	switch {
	case n[Wrong] > 0:
		return Wrong
	case n[Error] > 0:
		return Error
	case n[Verified] == len(cs):
		return Verified
	case n[Verified] > 0:
		return Partial
	}
	return Refused
}

// testUsage is what a test base key may do: what the scripts' base keys
// may (derive, and the exact strategies' encrypt, sign and unwrap), so
// that the strategy the token takes is the one a real base key would get.
const testUsage = derive.UseDerive | derive.UseEncrypt | derive.UseSign | derive.UseUnwrap

// labelPrefix marks the session objects of a run.
const labelPrefix = "p11derive-scheme-list-"

// run runs the case: the base key imported, the scheme, the check values,
// and everything destroyed.
func (c *testCase) run(ctx context.Context, tok *derive.Token, mechs []uint) (chk Check) {
	chk = Check{Variant: c.variant, Source: c.source}
	cleanup := context.WithoutCancel(ctx)
	base, err := tok.Import(ctx, derive.KeySpec{Label: labelPrefix + c.scheme, Type: c.baseType, Usage: testUsage}, c.base)
	if err != nil {
		classify(&chk, err, "import the test base key")
		return chk
	}
	defer func() {
		if err := tok.Destroy(cleanup, base); err != nil && chk.Status != Error {
			chk = Check{Variant: c.variant, Source: c.source}
			classify(&chk, err, "destroy the test base key")
			chk.Status = Error
		}
	}()
	results, err := c.derive(ctx, tok, base, scheme.Options{Label: labelPrefix + c.scheme, Usage: derive.UseEncrypt})
	defer func() {
		for _, res := range results {
			if err := tok.Destroy(cleanup, res.Key); err != nil && chk.Status != Error {
				chk = Check{Variant: c.variant, Source: c.source}
				classify(&chk, err, "destroy a derived key")
				chk.Status = Error
			}
		}
	}()
	if err != nil {
		classify(&chk, err, "")
		if chk.Mechanism == "" && chk.Call == "C_DeriveKey" && len(mechs) > 0 {
			// The native strategy's C_DeriveKey runs the entry's mechanism.
			chk.Mechanism = ckm.Name(mechs[0])
		}
		return chk
	}
	if len(results) != len(c.want) {
		chk.Status, chk.Reason = Error, fmt.Sprintf("internal error: %d keys made, %d known answers", len(results), len(c.want))
		return chk
	}
	chk.Status = Verified
	last := results[len(results)-1]
	chk.Strategy, chk.KDF, chk.Derivations = string(last.Strategy), last.Function, last.Derivations
	var want, got []string
	for i, res := range results {
		kcv, err := tok.CheckValueBy(ctx, res.Key, derive.KCVECB)
		if err != nil {
			classify(&chk, err, "check value of the derived key")
			chk.Strategy, chk.KDF, chk.Derivations = "", "", 0
			return chk
		}
		w := c.want[i].kcv()
		g := fmt.Sprintf("%x", kcv.Value)
		want, got = append(want, w), append(got, g)
		if w != g {
			chk.Status = Wrong
		}
	}
	if chk.Status == Wrong {
		chk.Want, chk.Got = strings.Join(want, ","), strings.Join(got, ",")
		chk.Reason = "the token's key is not the known answer's (check values differ)"
	}
	return chk
}

// refusals are the CKRs by which a token refuses a mechanism, a key's use
// with it or a template (the probe's list): Refused, not Error.
var refusals = map[uint]bool{
	pkcs11.CKR_MECHANISM_INVALID: true, pkcs11.CKR_MECHANISM_PARAM_INVALID: true,
	pkcs11.CKR_FUNCTION_NOT_SUPPORTED: true, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED: true,
	pkcs11.CKR_KEY_TYPE_INCONSISTENT: true, pkcs11.CKR_TEMPLATE_INCONSISTENT: true,
	pkcs11.CKR_TEMPLATE_INCOMPLETE: true, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID: true,
	pkcs11.CKR_ATTRIBUTE_TYPE_INVALID: true, pkcs11.CKR_ATTRIBUTE_READ_ONLY: true,
	pkcs11.CKR_DATA_LEN_RANGE: true, pkcs11.CKR_DATA_INVALID: true, pkcs11.CKR_KEY_SIZE_RANGE: true,
	pkcs11.CKR_KEY_NOT_WRAPPABLE: true, pkcs11.CKR_KEY_UNEXTRACTABLE: true, pkcs11.CKR_KEY_INDIGESTIBLE: true,
	pkcs11.CKR_ACTION_PROHIBITED: true, pkcs11.CKR_SESSION_READ_ONLY: true,
}

var (
	ckmName       = regexp.MustCompile(`CKM_[A-Z0-9_]+`)
	pkcs11Prefix  = regexp.MustCompile(`pkcs11: 0x[0-9A-Fa-f]+: `)
	ckrNameInText = regexp.MustCompile(`CKR_[A-Z0-9_]+`)
)

// classify fills chk from err: Refused when the token refused (a refusal
// CKR, or no strategy the token lists), Error for anything else (a module
// or session failure, bad input, a key left behind). step says what was
// being done, for errors outside the scheme.
func classify(chk *Check, err error, step string) {
	msg := pkcs11Prefix.ReplaceAllString(strings.ReplaceAll(err.Error(), "p11derive: ", ""), "")
	if step != "" {
		msg = step + ": " + msg
	}
	chk.Reason = msg
	te := tokenError(err)
	if te != nil {
		chk.Call = te.Call
		if c := te.CKR(); c != 0 {
			chk.CKR = ckrString(c)
		}
	} else if m := ckrNameInText.FindString(msg); m != "" {
		chk.CKR = m
	}
	if m := ckmName.FindString(msg); m != "" {
		chk.Mechanism = m
	}
	var lb *derive.LeftBehindError
	switch {
	case errors.As(err, &lb), errors.Is(err, derive.ErrInvalidInput), errors.Is(err, derive.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		chk.Status = Error
	case te != nil && te.CKR() != 0 && !refusals[te.CKR()]:
		chk.Status = Error
	case te != nil && te.CKR() != 0,
		errors.Is(err, derive.ErrUnsupported), errors.Is(err, derive.ErrKeyType),
		errors.Is(err, derive.ErrMissingAttribute), errors.Is(err, derive.ErrWeakKey):
		chk.Status = Refused
	default:
		chk.Status = Error
	}
}

// tokenError is the token's failed call behind err: in its chain, or in
// the reasons of an UnsupportedError (the first with a CKR).
func tokenError(err error) *derive.TokenError {
	var ue *derive.UnsupportedError
	if errors.As(err, &ue) {
		for _, r := range ue.Reasons {
			if r.Err == nil {
				continue
			}
			if te := tokenError(r.Err); te != nil && te.CKR() != 0 {
				return te
			}
		}
	}
	var te *derive.TokenError
	if errors.As(err, &te) {
		return te
	}
	return nil
}

// ckrString names a CK_RV: "CKR_MECHANISM_INVALID", or its number in hex.
func ckrString(c uint) string {
	s := pkcs11.Error(c).Error() // "pkcs11: 0x70: CKR_MECHANISM_INVALID"
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return fmt.Sprintf("CKR(%#x)", c)
}
