package derive

import (
	"strings"

	"github.com/miekg/pkcs11"
)

// assessment is how one strategy stands, before anything runs, for
// computing a request's function on this token with a base key: the one
// judgement behind Derive's candidates (and their order), the substitutes
// an *UnsupportedError names, and Token.Plan (and so the probe's reports).
// Its cost is the strategy's cost for the request.
type assessment struct {
	strategy
	// problem is why the strategy cannot run, or nil: what it cannot
	// compute in the request (applier), then what the token does not list
	// with the CKF_ flag of its use and the attributes the base key lacks
	// (check).
	problem error
	// unlisted is set when the problem is only mechanisms the token does
	// not list, or lists without the flag of their use: the strategy may
	// run all the same (tokens do not always list what they run), and
	// Derive tries it after the others.
	unlisted *notListedError
}

// tryable reports whether Derive tries the strategy: nothing is missing,
// or only the listing of its mechanisms.
func (a *assessment) tryable() bool { return a.problem == nil || a.unlisted != nil }

// assess assesses strategy st for r on this token with base. st must
// compute r.Function. It makes no PKCS#11 call but the first
// C_GetMechanismList and C_GetMechanismInfo once per mechanism, and, on
// the hot path (nothing missing), allocates nothing.
func (t *Token) assess(st strategy, base *Key, r *Request) assessment {
	a := assessment{strategy: st}
	if ap, ok := st.(applier); ok {
		a.problem = ap.applies(r)
	}
	if a.problem == nil {
		a.problem = st.check(t, base, r.Function)
	}
	if a.problem != nil {
		a.unlisted, _ = tryable(a.problem)
	}
	return a
}

// candidates returns the strategies to try, in order, as assessed, or the
// reasons why none can run. It makes no PKCS#11 call but the first C_GetMechanismList.
// Strategies whose mechanisms the token lists come first, cheapest first;
// then those it does not list but may run all the same.
//
// The candidates are appended to buf, whose room (one per strategy) keeps
// them off the heap.
func (t *Token) candidates(base *Key, r *Request, buf []assessment) ([]assessment, error) {
	key, cacheable := assessedKeyOf(base, r, t.memo.gen.Load())
	if cacheable {
		if c, ok := t.assessed.get(key, buf); ok {
			return c, nil
		}
	}
	var all []assessment
	var err error
	if r.Strategy != Auto {
		all, err = t.assessOne(base, r, buf)
	} else {
		all, err = t.assessAll(base, r, buf)
	}
	if err == nil && cacheable {
		t.assessed.put(key, all)
	}
	return all, err
}

// assessOne is candidates for a forced strategy.
func (t *Token) assessOne(base *Key, r *Request, buf []assessment) ([]assessment, error) {
	st := strategyByName(r.Strategy)
	if !st.computes(r.Function) {
		return nil, inputErr("strategy", "%s cannot compute %s", st.name(), r.Function.Name())
	}
	a := t.assess(st, base, r)
	if !a.tryable() {
		return nil, a.problem
	}
	return append(buf, a), nil
}

// assessAll is candidates under Auto, assessing every strategy.
func (t *Token) assessAll(base *Key, r *Request, buf []assessment) ([]assessment, error) {
	// listed go into buf, unlisted into a stack array (spilling to the heap
	// past its room), appended behind them once all are known.
	listed := buf[:0]
	var unlisted []assessment
	var nUnlisted int
	var reasons []StrategyReason
	var unlistedBuf [8]assessment
	for _, st := range strategies {
		if !st.computes(r.Function) {
			continue
		}
		if err := t.memo.failed(base.Handle, st.name(), r.Function); err != nil {
			reasons = append(reasons, StrategyReason{Function: r.Function.Name(), Strategy: st.name(), Reason: "refused before: " + err.Error(), Err: err})
			continue
		}
		switch a := t.assess(st, base, r); {
		case a.problem == nil:
			listed = append(listed, a)
		case a.unlisted != nil:
			if nUnlisted < len(unlistedBuf) {
				unlistedBuf[nUnlisted] = a
			} else {
				unlisted = append(unlisted, a)
			}
			nUnlisted++
		default:
			reasons = append(reasons, StrategyReason{Function: r.Function.Name(), Strategy: st.name(), Reason: a.problem.Error(), Err: a.problem})
		}
	}
	byCost := func(c []assessment) {
		// Insertion sort: stable, so ties keep the order of strategies.
		for i := 1; i < len(c); i++ {
			for j := i; j > 0 && c[j].cost(r) < c[j-1].cost(r); j-- {
				c[j], c[j-1] = c[j-1], c[j]
			}
		}
	}
	byCost(listed)
	if nUnlisted <= len(unlistedBuf) {
		unlisted = unlistedBuf[:nUnlisted]
	} else {
		unlisted = append(unlistedBuf[:len(unlistedBuf):len(unlistedBuf)], unlisted...)
	}
	byCost(unlisted)
	all := append(listed, unlisted...)
	if len(all) == 0 {
		return nil, &UnsupportedError{Function: r.Function.Name(), Reasons: reasons}
	}
	return all, nil
}

// substitutes lists the other functions this token could compute from the
// base key for r's data and key type, judging by the strategies' assessment
// (the mechanisms it lists, with their flags; the key's attributes) and the
// strategies it refused before (without running anything).
func (t *Token) substitutes(base *Key, r *Request) []string {
	var out []string
	for _, name := range FunctionNames() {
		if name == r.Function.Name() {
			continue
		}
		params := map[string]string{}
		if strings.Contains(name, "-cbc") {
			params["iv"] = strings.Repeat("00", blockOf(name))
		}
		f, err := ParseFunction(name, params)
		if err != nil || f.validate(r.Data, r.KeyType) != nil || f.checkBase(base) != nil {
			continue
		}
		rf := Request{Function: f, Data: r.Data, KeyType: r.KeyType}
		for _, st := range strategies {
			// Only a strategy with nothing missing: the token lists its
			// mechanisms with the flags of their uses (SoftHSM2 lists
			// CKM_AES_ECB without CKF_UNWRAP, and refuses C_UnwrapKey
			// with it).
			if !st.computes(f) || t.assess(st, base, &rf).problem != nil {
				continue
			}
			if mechs, _ := st.needs(f); !t.memo.refusedMechanisms(base.Handle, st.name(), mechs) {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// blockOf is the block size of the cipher a function name starts with.
func blockOf(name string) int {
	if strings.HasPrefix(name, "aes") {
		return 16
	}
	return 8
}

// unlisted returns, for each strategy that computes f, the mechanisms it
// needs that the token does not list, or nil if the token lists every
// mechanism of one of them (or its list cannot be read). It makes no call
// but the first C_GetMechanismList.
func (t *Token) unlisted(f Function) []StrategyMechanisms {
	list, err := t.mechanisms()
	if err != nil {
		return nil
	}
	var out []StrategyMechanisms
	for _, st := range strategies {
		if !st.computes(f) {
			continue
		}
		mechs, _ := st.needs(f)
		var missing []uint
		for _, m := range mechs {
			if !list[m] {
				missing = append(missing, m)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		out = append(out, StrategyMechanisms{Strategy: st.name(), Mechanisms: missing})
	}
	return out
}

// StrategyPlan is how one strategy stands, before anything runs, for
// computing a request's function on this token with a base key.
type StrategyPlan struct {
	Strategy Strategy
	// Mechanisms the strategy calls, and whether the token lists each with
	// the CKF_ flag (Flags) of the strategy's use of it.
	Mechanisms []uint
	Listed     []bool
	Flags      []uint
	// Attributes (CKA_*) the base key must have set to true, and those of
	// them it lacks.
	Attributes []uint
	Missing    []uint
	// Calls is the strategy's PKCS#11 calls for the request (reading DK
	// back not included).
	Calls int
	// Problem is why the strategy cannot run, or nil. A strategy whose
	// mechanisms are not all listed may still run (tokens do not always
	// list what they run): Problem then matches ErrUnsupported, and Derive
	// tries it after the others.
	Problem error
}

// Plan lists, for each strategy that computes r.Function, what it needs and
// whether this token and base key have it, making no PKCS#11 call but the
// first C_GetMechanismList and C_GetMechanismInfo once per mechanism. It is
// what Derive consults, for reports such as the probe's.
func (t *Token) Plan(base *Key, r Request) ([]StrategyPlan, error) {
	if err := validate(base, &r); err != nil {
		return nil, err
	}
	list, err := t.mechanisms()
	if err != nil {
		return nil, err
	}
	have := map[uint]bool{
		pkcs11.CKA_DERIVE: base.Derive, pkcs11.CKA_SIGN: base.Sign, pkcs11.CKA_UNWRAP: base.Unwrap,
		pkcs11.CKA_ENCRYPT: base.Encrypt, pkcs11.CKA_DECRYPT: base.Decrypt, pkcs11.CKA_WRAP: base.Wrap,
		pkcs11.CKA_VERIFY: base.Verify,
	}
	var plans []StrategyPlan
	for _, st := range strategies {
		if !st.computes(r.Function) {
			continue
		}
		p := StrategyPlan{Strategy: st.name(), Calls: st.cost(&r)}
		p.Mechanisms, p.Attributes = st.needs(r.Function)
		p.Flags = st.flags(r.Function)
		for i, m := range p.Mechanisms {
			_, ok := t.listedFor(list, mechUse{m, p.Flags[i]})
			p.Listed = append(p.Listed, ok)
		}
		for _, a := range p.Attributes {
			if !have[a] {
				p.Missing = append(p.Missing, a)
			}
		}
		p.Problem = t.assess(st, base, &r).problem
		plans = append(plans, p)
	}
	return plans, nil
}
