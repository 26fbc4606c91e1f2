package verify_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/derive/scheme/verify"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// refusedOn are the catalog entries each lab token refuses: SoftHSM2 has
// no SP 800-108 KDF and no CKM_XOR_BASE_AND_DATA; neither token runs
// CKM_DES3_CMAC as the KDF's PRF.
var refusedOn = map[string]map[string]bool{
	"softhsm2": {"scp03 S-ENC, S-MAC, S-RMAC": true, "gp-div kdf3 (ENC, MAC, DEK)": true,
		"an10922 AES-128, M of 16 to 31 bytes": true, "tr31 version D (AES)": true, "tr31 version B (TDES)": true,
		"tr31 versions A and C (TDES variant)": true},
	"nss":   {"tr31 version B (TDES)": true},
	"nssdb": {"tr31 version B (TDES)": true},
}

// TestRun: on each lab token, opened read-only, every computed entry is
// verified against its known answers or refused with the token's CKR and
// the mechanism; the entries with nothing to run are not run; every object
// made is gone.
func TestRun(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		cfg := derive.Config{Module: lt.Lab.Module, InitArgs: lt.Lab.InitArgs, Slot: &lt.Lab.SlotID, ReadOnly: true}
		if lt.Lab.Login {
			cfg.PIN = lt.Lab.PIN
		}
		tok, err := derive.Open(cfg)
		require.NoError(t, err)
		defer tok.Close()
		objects := lt.Objects(t)

		res, err := verify.Run(ctx, tok)
		require.NoError(t, err)
		assert.Equal(t, objects, lt.Objects(t), "objects left behind")
		require.Len(t, res, len(scheme.Catalog()))
		for _, e := range res {
			name := e.Scheme + " " + e.Case
			switch {
			case e.Entry.Status == scheme.NotComputable || e.Entry.Status == scheme.NotOffered:
				assert.Equal(t, verify.NotRun, e.Status, name)
				assert.Empty(t, e.Checks, name)
				continue
			case refusedOn[lt.Kind][name]:
				assert.Equal(t, verify.Refused, e.Status, name)
			default:
				assert.Equal(t, verify.Verified, e.Status, name)
			}
			require.NotEmpty(t, e.Checks, name)
			for _, c := range e.Checks {
				assert.NotEmpty(t, c.Source, name)
				switch c.Status {
				case verify.Verified:
					assert.NotEmpty(t, c.Strategy, name)
					assert.Positive(t, c.Derivations, name)
				case verify.Refused:
					assert.True(t, strings.HasPrefix(c.Mechanism, "CKM_"), "%s %s: %+v", name, c.Variant, c)
					assert.NotEmpty(t, c.Reason)
				default:
					t.Errorf("%s %s: %+v", name, c.Variant, c)
				}
			}
		}
		// The refusals the token gives by CKR carry it.
		if lt.Kind == "softhsm2" {
			for _, e := range res {
				if e.Scheme == "tr31" && e.Case == "versions A and C (TDES variant)" {
					assert.Equal(t, "CKR_MECHANISM_INVALID", e.Checks[0].CKR, "%+v", e.Checks[0])
					assert.Equal(t, "CKM_XOR_BASE_AND_DATA", e.Checks[0].Mechanism)
				}
			}
		}
	})
}

// TestEveryComputedEntryHasACase: the catalog and the cases stay in step.
func TestEveryComputedEntryHasACase(t *testing.T) {
	tok := labtok.All(t)[0].Tok
	res, err := verify.Run(context.Background(), tok)
	require.NoError(t, err)
	for _, e := range res {
		computed := e.Entry.Status == scheme.Computed || e.Entry.Status == scheme.ComputedUnverified
		assert.Equal(t, computed, len(e.Checks) > 0, "%s %s", e.Scheme, e.Case)
	}
}
