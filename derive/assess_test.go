package derive

import (
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// TestPlanIsWhatDeriveConsults: Derive's candidates are Plan's strategies
// that may run — those with no problem, cheapest first, then those whose
// only problem is the token's mechanism list — because both come from the
// one assessment.
func TestPlanIsWhatDeriveConsults(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		for _, c := range []struct {
			name  string
			attrs []*pkcs11.Attribute
		}{{"all attributes", nil}, {"no CKA_DERIVE", []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false)}},
			{"no CKA_UNWRAP", []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false)}}} {
			base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), c.attrs...)
			for _, r := range []Request{
				{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 32), KeyType: KeyAES256},
				{Function: Encrypt{Cipher: AES, Mode: CBC, IV: make([]byte, 16)}, Data: lab.Random(t, 32), KeyType: KeyAES256},
				{Function: Encrypt{Cipher: AES, Mode: CBC, IV: make([]byte, 16)}, Data: lab.Random(t, 16), KeyType: KeyAES128},
				{Function: Decrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128},
			} {
				t.Run(c.name+"/"+r.Function.Name()+"/"+r.KeyType.String(), func(t *testing.T) {
					plans, err := lt.tok.Plan(base, r)
					require.NoError(t, err)
					var listed, unlisted []Strategy
					for _, p := range plans {
						var nl *notListedError
						switch {
						case p.Problem == nil:
							listed = insertByCost(listed, p, plans)
						case errors.As(p.Problem, &nl) && nl.missing == nil:
							unlisted = insertByCost(unlisted, p, plans)
						}
					}
					want := append(listed, unlisted...)
					cands, err := lt.tok.candidates(base, &r, nil)
					if len(want) == 0 {
						assert.ErrorIs(t, err, ErrUnsupported)
						return
					}
					require.NoError(t, err)
					var got []Strategy
					for _, a := range cands {
						got = append(got, a.name())
						assert.Equal(t, a.cost(&r), planOf(plans, a.name()).Calls, "the same cost")
					}
					assert.Equal(t, want, got)
				})
			}
		}
	})
}

// insertByCost appends p's strategy to s, keeping s in order of cost (ties
// in the order of plans, which is the order of strategies).
func insertByCost(s []Strategy, p StrategyPlan, plans []StrategyPlan) []Strategy {
	i := len(s)
	for i > 0 && planOf(plans, s[i-1]).Calls > p.Calls {
		i--
	}
	return append(s[:i], append([]Strategy{p.Strategy}, s[i:]...)...)
}

func planOf(plans []StrategyPlan, st Strategy) StrategyPlan {
	for _, p := range plans {
		if p.Strategy == st {
			return p
		}
	}
	return StrategyPlan{}
}
