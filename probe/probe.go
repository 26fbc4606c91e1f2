package probe

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/ckm"
)

// Options says what to probe and how.
type Options struct {
	// Runs is the number of derivations timed per function and strategy
	// (the median is reported); 0 means 3.
	Runs int
	// Functions restricts the probe to these function names (the names of
	// derive.FunctionNames); empty means all.
	Functions []string
	// ListOnly runs nothing and makes no object: results come from the
	// mechanism list alone (statuses listed and unavailable).
	ListOnly bool
	// NoImport never imports test keys of known value: base keys are
	// generated in the token and results are cross-checked.
	NoImport bool
	// KeyLabel names an existing base key (a secret key's CKA_LABEL) to
	// analyse: which strategies it can use, now or with which attribute
	// changes, and whether its unwrap template makes MAC-unwrap safe. The
	// key is only read.
	KeyLabel string
	// KeyID selects the key by CKA_ID, alone or with KeyLabel (the key
	// must then have both).
	KeyID []byte
	// Now is the report's clock; nil means time.Now.
	Now func() time.Time
	// ReadWrite, if set, opens the same token with read-write sessions:
	// the probe calls it (once) only when the token refuses to make a
	// test key in a read-only session (CKR_SESSION_READ_ONLY), and makes
	// the key there instead, saying so (p11derive probe --rw). The probe
	// closes what it returns. Nil: no retry, and the report says why.
	ReadWrite func() (*derive.Token, error)
}

// Run probes the token and returns its report. It makes only session
// objects (the probe's base keys and the keys it derives), destroys every
// one of them, and never modifies an object it did not make. An error
// means no report could be made (the token could not be read at all, or
// ctx ended); what the token cannot do is in the report, not an error.
func Run(ctx context.Context, tok *derive.Token, opts Options) (*Report, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	if opts.Runs <= 0 {
		opts.Runs = 3
	}
	known := map[string]bool{}
	for _, n := range derive.FunctionNames() {
		known[n] = true
	}
	for _, n := range opts.Functions {
		if !known[strings.ToLower(strings.TrimSpace(n))] {
			return nil, fmt.Errorf("probe: unknown function %q (known: %s): %w", n, strings.Join(derive.FunctionNames(), ", "), derive.ErrInvalidInput)
		}
	}
	start := now()
	rep := &Report{SchemaVersion: SchemaVersion, Generator: "p11derive probe",
		Time: start.UTC().Format(time.RFC3339), ListOnly: opts.ListOnly}
	var err error
	if rep.Token, err = tokenInfo(ctx, tok); err != nil {
		return nil, err
	}
	// The first C_GetMechanismList: everything else is judged from it.
	if _, err := tok.Plan(fakeKey(baseAES), derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data: dataAES, KeyType: derive.KeyAES128}); err != nil {
		return nil, err
	}
	infos := newMechInfos(tok)
	rep.Mechanisms = infos.section()

	p := &prober{ctx: ctx, tok: tok, opts: opts, infos: infos, keys: map[bkKey]*baseKey{}}
	defer p.close()
	defer p.cleanup()
	all := specs(opts.Functions)
	for _, s := range all {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rep.Results = append(rep.Results, p.probe(s)...)
	}
	rep.Verification = p.verification()
	for _, r := range rep.Results {
		rep.Incomplete = rep.Incomplete || r.Status == Error
	}
	if opts.KeyLabel != "" || len(opts.KeyID) > 0 {
		if rep.Key, err = analyseKey(ctx, tok, opts, all, rep.Results); err != nil {
			return nil, err
		}
	}
	rep.DurationMS = now().Sub(start).Milliseconds()
	return rep, nil
}

func tokenInfo(ctx context.Context, tok *derive.Token) (TokenInfo, error) {
	ti := tok.Info()
	out := TokenInfo{
		Label: ti.Label, Manufacturer: ti.ManufacturerID, Model: ti.Model, Serial: ti.SerialNumber,
		Firmware: version(ti.FirmwareVersion), Hardware: version(ti.HardwareVersion), Slot: tok.SlotID(),
		Flags: tokenFlags(ti.Flags),
	}
	mi, err := tok.ModuleInfo()
	if err != nil {
		return out, err
	}
	out.Module = ModuleInfo{Description: mi.LibraryDescription, Manufacturer: mi.ManufacturerID,
		Version: version(mi.LibraryVersion), PKCS11Version: version(mi.CryptokiVersion)}
	state, err := tok.SessionState(ctx)
	if err != nil {
		return out, err
	}
	out.Session = sessionState(state)
	return out, nil
}

func version(v pkcs11.Version) string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

func tokenFlags(f uint) []string {
	names := []struct {
		f    uint
		name string
	}{
		{pkcs11.CKF_RNG, "rng"}, {pkcs11.CKF_WRITE_PROTECTED, "write-protected"},
		{pkcs11.CKF_LOGIN_REQUIRED, "login-required"}, {pkcs11.CKF_USER_PIN_INITIALIZED, "user-pin-initialized"},
		{pkcs11.CKF_RESTORE_KEY_NOT_NEEDED, "restore-key-not-needed"}, {pkcs11.CKF_CLOCK_ON_TOKEN, "clock-on-token"},
		{pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH, "protected-authentication-path"},
		{pkcs11.CKF_DUAL_CRYPTO_OPERATIONS, "dual-crypto-operations"}, {pkcs11.CKF_TOKEN_INITIALIZED, "token-initialized"},
	}
	out := []string{}
	for _, n := range names {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

func sessionState(s uint) string {
	switch s {
	case pkcs11.CKS_RO_PUBLIC_SESSION:
		return "CKS_RO_PUBLIC_SESSION"
	case pkcs11.CKS_RO_USER_FUNCTIONS:
		return "CKS_RO_USER_FUNCTIONS"
	case pkcs11.CKS_RW_PUBLIC_SESSION:
		return "CKS_RW_PUBLIC_SESSION"
	case pkcs11.CKS_RW_USER_FUNCTIONS:
		return "CKS_RW_USER_FUNCTIONS"
	case pkcs11.CKS_RW_SO_FUNCTIONS:
		return "CKS_RW_SO_FUNCTIONS"
	}
	return fmt.Sprintf("CKS(%d)", s)
}

// prober runs the derivations.
type prober struct {
	ctx   context.Context
	tok   *derive.Token
	opts  Options
	infos *mechInfos
	// keys are the base keys by kind and usage; made lists each distinct
	// one once, in the order made; shared is, per kind, the generated key
	// with every usage that the strategies share (for cross-checking).
	keys   map[bkKey]*baseKey
	made   []*baseKey
	shared [nBaseKinds]*baseKey
	// rw is the read-write Token of Options.ReadWrite, once opened.
	rw    *derive.Token
	rwErr error
	// dks are the derived keys not yet destroyed (on a panic).
	dks []*derive.Key
}

type bkKey struct {
	kind  baseKind
	usage derive.Usage
}

// base returns the probe's base key of the kind for a strategy that needs
// the attributes attrs, made on first use.
func (p *prober) base(kind baseKind, attrs []uint) *baseKey {
	k := bkKey{kind, usageOf(kind, attrs)}
	if bk := p.keys[k]; bk != nil {
		return bk
	}
	bk := p.makeBaseKey(kind, k.usage)
	p.keys[k] = bk
	return bk
}

// readWrite returns the read-write Token of Options.ReadWrite, opened on
// first use, or nil.
func (p *prober) readWrite() *derive.Token {
	if p.opts.ReadWrite == nil || p.rwErr != nil {
		return nil
	}
	if p.rw == nil {
		p.rw, p.rwErr = p.opts.ReadWrite()
	}
	return p.rw
}

func (p *prober) close() {
	if p.rw != nil {
		p.rw.Close()
	}
}

// cleanup destroys everything the probe made.
func (p *prober) cleanup() {
	ctx := context.Background() // destroy even when p.ctx has ended
	for _, dk := range p.dks {
		p.tok.Destroy(ctx, dk)
	}
	p.dks = nil
	for _, bk := range p.made {
		if bk.key != nil {
			p.tok.Destroy(ctx, bk.key)
			bk.key = nil
		}
	}
}

func (p *prober) verification() Verification {
	v := Verification{Method: "none", BaseKeys: []BaseKey{}}
	sources := map[string]bool{}
	for _, bk := range p.made {
		v.BaseKeys = append(v.BaseKeys, bk.info)
		if bk.info.Source != "none" {
			sources[bk.info.Source] = true
		}
	}
	switch {
	case sources["imported"] && sources["generated"]:
		v.Method = "mixed"
	case sources["imported"]:
		v.Method = string(KnownAnswer)
	case sources["generated"]:
		v.Method = string(CrossCheck)
	}
	return v
}

// run is one strategy's outcome on one spec, before cross-checking.
type run struct {
	res *Result
	kcv []byte // the check value all runs agreed on; nil if none
}

// probe computes one spec with every strategy that can compute it.
func (p *prober) probe(s *spec) []Result {
	if s.err != nil {
		return []Result{{KDF: s.kdf, Params: s.params, Strategy: "", Status: Unavailable, VerifiedBy: None,
			KeyType: s.out.String(), BaseKey: s.base.String(), Needs: []string{}, Mechanisms: []MechanismUse{},
			Reason: "the probe cannot call this function: " + trim(s.err)}}
	}
	r := derive.Request{Function: s.f, Data: s.data, KeyType: s.out}
	plans, err := p.tok.Plan(fakeKey(s.base), r)
	if err != nil {
		return []Result{{KDF: s.kdf, Params: s.params, Status: Unavailable, VerifiedBy: None,
			KeyType: s.out.String(), BaseKey: s.base.String(), Needs: []string{}, Mechanisms: []MechanismUse{},
			Reason: trim(err)}}
	}
	runs := make([]run, 0, len(plans))
	crossCheckable := true
	for _, pl := range plans {
		var bk *baseKey
		if !p.opts.ListOnly {
			bk = p.base(s.base, pl.Attributes)
			crossCheckable = crossCheckable && bk.value == nil
		}
		expected, noRef := s.expected(bk)
		res := &Result{KDF: s.kdf, Params: s.params, Strategy: string(pl.Strategy), VerifiedBy: None,
			PlannedCalls: pl.Calls, KeyType: s.out.String(), BaseKey: s.base.String(), Needs: attrNames(pl.Attributes)}
		allListed := true
		for i, m := range pl.Mechanisms {
			// What the strategy uses the mechanism for, and the CKF_ flags
			// that say the token does that, are derive's assessment
			// (StrategyPlan.Flags): the probe judges by the same rule as
			// Derive, its errors and Plan.
			flag := pl.Flags[i]
			mu := MechanismUse{Name: mechName(m), Listed: p.tok.Lists(m), Use: useOf(flag)}
			if info, _ := p.infos.get(m); info != nil {
				ok := info.Flags&flag == flag
				mu.Flag, mu.Lacks = &ok, ckfNames(flag&^info.Flags)
			}
			allListed = allListed && pl.Listed[i]
			res.Mechanisms = append(res.Mechanisms, mu)
		}
		var kcv []byte
		switch {
		case p.opts.ListOnly:
			listOnly(res, pl)
		case bk.key == nil:
			listOnly(res, pl)
			res.Reason = "not run: no " + s.base.String() + " base key (" + bk.info.Reason + ")"
			if bk.moduleFailed {
				res.Status = Error
			}
		default:
			r.Strategy = pl.Strategy
			kcv = p.runStrategy(res, bk, r, allListed, expected)
			if res.Status == Ran && bk.value != nil && res.Reason == "" {
				res.Reason = noRef
			}
		}
		runs = append(runs, run{res, kcv})
	}
	if !p.opts.ListOnly && crossCheckable {
		crossCheck(runs)
	}
	out := make([]Result, len(runs))
	for i, r := range runs {
		out[i] = *r.res
	}
	return out
}

// listOnly sets res from the plan alone.
func listOnly(res *Result, pl derive.StrategyPlan) {
	if pl.Problem == nil {
		res.Status = Listed
		return
	}
	res.Status = Unavailable
	res.Reason = trim(pl.Problem)
}

// runStrategy derives opts.Runs keys with one strategy, checks each
// against expected (the reference's check value, when known) and
// destroys it. It returns the check value the runs agreed on, for
// cross-checking, or nil.
func (p *prober) runStrategy(res *Result, bk *baseKey, r derive.Request, allListed bool, expected []byte) []byte {
	var times []time.Duration
	var kcv []byte
	for i := 0; i < p.opts.Runs; i++ {
		t0 := time.Now()
		d, err := p.tok.Derive(p.ctx, bk.key, r)
		dt := time.Since(t0)
		if err != nil {
			failure(res, err, allListed, i)
			return nil
		}
		p.dks = append(p.dks, d.Key)
		times = append(times, dt)
		if i == 0 {
			res.Calls = d.Calls
			for _, w := range d.Warnings {
				res.Notes = append(res.Notes, strings.TrimPrefix(w, "p11derive: "))
			}
		}
		got, cerr := p.checkValue(d.Key)
		p.destroyDK(d.Key)
		switch {
		case cerr != nil && moduleFailure(cerr):
			res.Status, res.VerifiedBy = Error, None
			res.Reason = "the module or session failed computing DK's check value (not a refusal of this strategy): " + trim(cerr)
			setCKR(res, cerr)
			return nil
		case cerr != nil:
			res.Status, res.VerifiedBy = Ran, None
			res.Reason = "DK's check value could not be computed: " + trim(cerr)
			res.MedianNS, res.Runs = median(times), len(times)
			return nil
		case expected != nil && !bytes.Equal(got, expected):
			res.Status, res.VerifiedBy = Failed, None
			res.CheckValue, res.Expected = hex.EncodeToString(got), hex.EncodeToString(expected)
			res.Reason = fmt.Sprintf("wrong result: DK's check value is %x, the reference's %x", got, expected)
			if i > 0 {
				res.Reason += fmt.Sprintf(" (in run %d of %d; the earlier runs were right)", i+1, p.opts.Runs)
			}
			res.MedianNS, res.Runs = median(times), len(times)
			return nil
		case kcv != nil && !bytes.Equal(got, kcv):
			res.Status, res.VerifiedBy = Failed, None
			res.CheckValue = hex.EncodeToString(kcv)
			res.Reason = fmt.Sprintf("wrong result: unstable, run %d gave check value %x, run 1 %x", i+1, got, kcv)
			res.MedianNS, res.Runs = median(times), len(times)
			return nil
		}
		kcv = got
	}
	res.MedianNS, res.Runs = median(times), len(times)
	res.CheckValue = hex.EncodeToString(kcv)
	if expected != nil {
		res.Status, res.VerifiedBy = Verified, KnownAnswer
		res.Expected = hex.EncodeToString(expected)
		return kcv
	}
	res.Status = Ran
	return kcv
}

// failure sets res for a derivation that returned an error.
func failure(res *Result, err error, allListed bool, run int) {
	res.Reason = trim(err)
	if run > 0 {
		res.Reason = fmt.Sprintf("run %d of the same derivation: %s", run+1, res.Reason)
	}
	var te *derive.TokenError
	var lb *derive.LeftBehindError
	switch {
	case moduleFailure(err) || errors.As(err, &lb):
		// Not the token's answer about this mechanism: the module, the
		// session or the key failed. Nothing was learnt.
		res.Status = Error
		res.Reason = "the module or session failed, not a refusal of this strategy: " + res.Reason
		setCKR(res, err)
	case errors.As(err, &te):
		res.Call = te.Call
		if c := te.CKR(); c != 0 {
			res.CKR = ckrString(c)
		}
		if d := flagless(res); d != "" {
			res.Notes = append(res.Notes, d)
		}
		if allListed || run > 0 {
			res.Status = Failed
		} else {
			res.Status = Unavailable
		}
	case errors.Is(err, derive.ErrWeakKey):
		res.Status = Failed
	default:
		// Refused before any call: the strategy cannot compute this
		// request here (a missing attribute, a CBC chain too long for it).
		res.Status = Unavailable
	}
}

// setCKR records the call and CKR behind err.
func setCKR(res *Result, err error) {
	var te *derive.TokenError
	if errors.As(err, &te) {
		res.Call = te.Call
		if c := te.CKR(); c != 0 {
			res.CKR = ckrString(c)
		}
	}
}

// moduleFailure reports whether err is a failed call whose CKR is not the
// token answering for a mechanism, a key's use or a template (those are
// refusals), but the module, the session or an object failing:
// CKR_CRYPTOKI_NOT_INITIALIZED, CKR_GENERAL_ERROR, CKR_DEVICE_ERROR,
// CKR_SESSION_*, CKR_TOKEN_NOT_PRESENT, CKR_OBJECT_HANDLE_INVALID (a key
// that vanished), unknown codes...
func moduleFailure(err error) bool {
	var te *derive.TokenError
	if !errors.As(err, &te) {
		return false
	}
	c := te.CKR()
	if c == 0 {
		return false // not a CKR: a wrong output length, say (the token's doing)
	}
	return !refusals[c]
}

// refusals are the CKRs by which a token refuses a mechanism, a key's use
// with it or a template: a status failed or unavailable, not error.
var refusals = map[uint]bool{
	pkcs11.CKR_MECHANISM_INVALID: true, pkcs11.CKR_MECHANISM_PARAM_INVALID: true,
	pkcs11.CKR_FUNCTION_NOT_SUPPORTED: true, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED: true,
	pkcs11.CKR_KEY_TYPE_INCONSISTENT: true, pkcs11.CKR_TEMPLATE_INCONSISTENT: true,
	pkcs11.CKR_TEMPLATE_INCOMPLETE: true, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID: true,
	pkcs11.CKR_ATTRIBUTE_TYPE_INVALID: true, pkcs11.CKR_ATTRIBUTE_READ_ONLY: true,
	pkcs11.CKR_DATA_LEN_RANGE: true, pkcs11.CKR_DATA_INVALID: true, pkcs11.CKR_KEY_SIZE_RANGE: true,
	pkcs11.CKR_WRAPPED_KEY_INVALID: true, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE: true,
	pkcs11.CKR_ENCRYPTED_DATA_INVALID: true, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE: true,
	pkcs11.CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT: true, pkcs11.CKR_UNWRAPPING_KEY_SIZE_RANGE: true,
	pkcs11.CKR_KEY_NOT_WRAPPABLE: true, pkcs11.CKR_KEY_UNEXTRACTABLE: true, pkcs11.CKR_KEY_INDIGESTIBLE: true,
	pkcs11.CKR_ACTION_PROHIBITED: true, pkcs11.CKR_SESSION_READ_ONLY: true,
}

// flagless names the mechanisms the token lists without the flag for the
// use the strategy makes of them (CKM_AES_ECB without CKF_UNWRAP, say): the
// token told, in C_GetMechanismInfo, that it would refuse.
func flagless(res *Result) string {
	var parts []string
	for _, m := range res.Mechanisms {
		if m.Flag != nil && !*m.Flag {
			parts = append(parts, m.Name+" without "+m.Lacks)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "the token lists " + strings.Join(parts, " and ") + " (C_GetMechanismInfo)"
}

// crossCheck compares the check values of the strategies that ran on a
// generated base key: verified when at least two ran and all agree;
// failed, every one of them, when they disagree (one is wrong and the
// probe cannot tell which: no majority vote, since two strategies can
// share a fault, as MAC-unwrap and CMAC-unwrap share C_UnwrapKey).
func crossCheck(runs []run) {
	var ok []run
	for _, r := range runs {
		if r.kcv != nil && r.res.Status == Ran {
			ok = append(ok, r)
		}
	}
	if len(ok) < 2 {
		for _, r := range ok {
			r.res.Reason = "no known answer (the base key was generated in the token) and no other strategy to cross-check with"
		}
		return
	}
	agree := true
	for _, r := range ok[1:] {
		agree = agree && bytes.Equal(r.kcv, ok[0].kcv)
	}
	if agree {
		var names []string
		for _, r := range ok {
			names = append(names, r.res.Strategy)
		}
		for _, r := range ok {
			r.res.Status, r.res.VerifiedBy = Verified, CrossCheck
			r.res.Reason = ""
			r.res.Notes = append(r.res.Notes, "same check value from "+strings.Join(names, ", "))
		}
		return
	}
	var vals []string
	for _, r := range ok {
		vals = append(vals, fmt.Sprintf("%s %x", r.res.Strategy, r.kcv))
	}
	for _, r := range ok {
		r.res.Status, r.res.VerifiedBy = Failed, None
		r.res.Reason = "wrong result: the strategies disagree (check values " + strings.Join(vals, ", ") +
			"); at least one is wrong, and without a known answer the probe cannot tell which"
	}
}

func (p *prober) checkValue(k *derive.Key) ([]byte, error) {
	if k.Cipher() == 0 {
		return nil, errorf("DK is a %s key, which has no check value", ckm.KeyType(k.Type))
	}
	return p.tok.CheckValue(p.ctx, k)
}

func (p *prober) destroyDK(k *derive.Key) {
	if err := p.tok.Destroy(context.Background(), k); err != nil {
		return // cleanup tries again
	}
	for i, d := range p.dks {
		if d == k {
			p.dks = append(p.dks[:i], p.dks[i+1:]...)
			break
		}
	}
}

func median(ds []time.Duration) int64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return int64(s[len(s)/2])
	}
	return int64(s[len(s)/2-1]+s[len(s)/2]) / 2
}

var attrNameTable = map[uint]string{
	pkcs11.CKA_DERIVE: "CKA_DERIVE", pkcs11.CKA_SIGN: "CKA_SIGN", pkcs11.CKA_VERIFY: "CKA_VERIFY",
	pkcs11.CKA_ENCRYPT: "CKA_ENCRYPT", pkcs11.CKA_DECRYPT: "CKA_DECRYPT", pkcs11.CKA_WRAP: "CKA_WRAP",
	pkcs11.CKA_UNWRAP: "CKA_UNWRAP", pkcs11.CKA_SENSITIVE: "CKA_SENSITIVE", pkcs11.CKA_EXTRACTABLE: "CKA_EXTRACTABLE",
	pkcs11.CKA_TOKEN: "CKA_TOKEN", pkcs11.CKA_PRIVATE: "CKA_PRIVATE", pkcs11.CKA_MODIFIABLE: "CKA_MODIFIABLE",
	pkcs11.CKA_ALWAYS_SENSITIVE: "CKA_ALWAYS_SENSITIVE", pkcs11.CKA_NEVER_EXTRACTABLE: "CKA_NEVER_EXTRACTABLE",
	pkcs11.CKA_CLASS: "CKA_CLASS", pkcs11.CKA_KEY_TYPE: "CKA_KEY_TYPE", pkcs11.CKA_VALUE_LEN: "CKA_VALUE_LEN",
	pkcs11.CKA_LABEL: "CKA_LABEL", pkcs11.CKA_WRAP_WITH_TRUSTED: "CKA_WRAP_WITH_TRUSTED", pkcs11.CKA_TRUSTED: "CKA_TRUSTED",
	pkcs11.CKA_COPYABLE: "CKA_COPYABLE", pkcs11.CKA_DESTROYABLE: "CKA_DESTROYABLE",
}

func attrName(a uint) string {
	if n, ok := attrNameTable[a]; ok {
		return n
	}
	return fmt.Sprintf("CKA(%#x)", a)
}

func attrNames(as []uint) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = attrName(a)
	}
	return out
}
