package batch

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// counted is a lab token reached through the forwarding module, which
// counts every PKCS#11 call that crosses the API.
type counted struct {
	*labtok.Token
	fwd *lab.Token
}

var (
	countedMu   sync.Mutex
	countedToks = map[string]*counted{}
)

func countedToken(tb testing.TB, kind string) *counted {
	tb.Helper()
	countedMu.Lock()
	defer countedMu.Unlock()
	if c := countedToks[kind]; c != nil {
		return c
	}
	ft := fwd.Wrap(tb, lab.Shared(tb, kind), fwd.Config{})
	c := &counted{Token: labtok.New(tb, kind, ft), fwd: ft}
	countedToks[kind] = c
	return c
}

// callFuncs are the functions a batch calls.
var callFuncs = []string{"C_DeriveKey", "C_GetAttributeValue", "C_EncryptInit", "C_Encrypt", "C_WrapKey",
	"C_DestroyObject", "C_SignInit", "C_Sign", "C_UnwrapKey", "C_FindObjectsInit", "C_FindObjects",
	"C_FindObjectsFinal", "C_OpenSession", "C_GetMechanismList", "C_CreateObject", "C_SetAttributeValue", "C_CopyObject"}

func (c *counted) calls(tb testing.TB) map[string]int {
	m := map[string]int{}
	for _, f := range callFuncs {
		if n := fwd.Calls(tb, c.fwd, f); n > 0 {
			m[f] = n
		}
	}
	return m
}

// batchCase is one batch configuration to measure.
type batchCase struct {
	kind     string
	strategy derive.Strategy
	keep     bool
}

func (bc batchCase) String() string {
	mode := "wrap"
	if bc.keep {
		mode = "keep"
	}
	return fmt.Sprintf("%s/%s/%s", bc.kind, bc.strategy, mode)
}

// deriver makes the Deriver of a case on lt: AES-ECB into AES-128 keys from
// a base key of known value, wrapped under an AES transport key with
// CKM_AES_KEY_WRAP, or kept under unique labels (destroyed at the end).
func (bc batchCase) deriver(tb testing.TB, lt *labtok.Token) *Deriver {
	base := lt.ImportUses(tb, pkcs11.CKK_AES, kValue, "K-"+uniq(tb), derive.UseDerive|derive.UseEncrypt|derive.UseSign|derive.UseUnwrap)
	d := &Deriver{Token: lt.Tok, Base: base, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128, Strategy: bc.strategy}}
	if bc.keep {
		prefix := "bench-" + uniq(tb) + "-"
		d.LabelTemplate = prefix + "{id}"
		tb.Cleanup(func() { destroyLabelled(tb, lt, prefix) })
	} else {
		m, _ := ParseWrapMech("aes-key-wrap")
		d.Wrap = &Wrap{Key: lt.ImportUses(tb, pkcs11.CKK_AES, tValue, "T-"+uniq(tb), derive.UseWrap|derive.UseUnwrap), Mech: m}
	}
	require.NoError(tb, d.Check())
	if bc.keep {
		_, err := d.Scan(context.Background())
		require.NoError(tb, err)
	}
	return d
}

// runRows runs n rows through d, their ids starting with prefix, and
// returns the stats.
func runRows(tb testing.TB, d *Deriver, prefix string, n, workers int) Stats {
	in, err := NewInput(&genCSV{n: n, prefix: prefix})
	require.NoError(tb, err)
	out, err := OpenOutput(filepath.Join(tb.TempDir(), "out.csv"), d.Header())
	require.NoError(tb, err)
	st, err := Run(context.Background(), in, out, d, Config{Workers: workers, OnFailure: func(e *RowError) { tb.Error(e) }})
	require.NoError(tb, out.Close())
	require.NoError(tb, err)
	require.Zero(tb, st.Failed)
	return st
}

// perRow counts the PKCS#11 calls of n rows of a case and returns them per row.
func (bc batchCase) perRow(tb testing.TB, n int) (float64, map[string]int) {
	c := countedToken(tb, bc.kind)
	d := bc.deriver(tb, c.Token)
	runRows(tb, d, "warm", 2, 1) // sessions opened, mechanisms listed
	fwd.Configure(tb, c.fwd, fwd.Config{})
	runRows(tb, d, "r", n, 1)
	m := c.calls(tb)
	total := 0
	for _, v := range m {
		total += v
	}
	return float64(total) / float64(n), m
}

// TestCallsPerRow pins the PKCS#11 calls of one batch row, counted by the
// forwarding module: in wrap mode with the native strategy, derive (1),
// read DK's attributes back (1), its check value (C_EncryptInit, C_Encrypt),
// C_WrapKey (1: the room for the wrapped key is known) and destroy DK (1);
// mac-unwrap derives in 3 (C_SignInit, C_Sign, C_UnwrapKey); in keep mode,
// instead of the wrap and the destruction, the final label (1:
// C_SetAttributeValue, DK being made under a provisional one) and the check
// that no other key has it (3: C_FindObjects*).
func TestCallsPerRow(t *testing.T) {
	for _, c := range []struct {
		bc   batchCase
		want float64
	}{
		{batchCase{"softhsm2", derive.Native, false}, 6},
		{batchCase{"nss", derive.Native, false}, 6},
		{batchCase{"nss", derive.MACUnwrap, false}, 8},
		{batchCase{"softhsm2", derive.Native, true}, 8},
	} {
		t.Run(c.bc.String(), func(t *testing.T) {
			got, m := c.bc.perRow(t, 20)
			t.Logf("%.1f calls per row: %v", got, m)
			assert.Equal(t, c.want, got)
		})
	}
}

// BenchmarkBatch measures a batch per token, strategy, mode and number of
// workers: rows per second, and PKCS#11 calls per row (counted through the
// forwarding module on a separate run; the timed run goes to the token
// directly). Compare with the README's bare C loop of the same 6 calls per
// row (internal/baseline, the repository's C baseline, has no wrap mode).
func BenchmarkBatch(b *testing.B) {
	cases := []batchCase{
		{"softhsm2", derive.Native, false},
		{"softhsm2", derive.Native, true},
		{"nss", derive.Native, false},
		{"nss", derive.MACUnwrap, false},
		{"nss", derive.CMACUnwrap, false},
		{"nssdb", derive.Native, true},
	}
	for _, bc := range cases {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/workers=%d", bc, workers), func(b *testing.B) {
				calls, _ := bc.perRow(b, 50)
				d := bc.deriver(b, labtok.Shared(b, bc.kind))
				runRows(b, d, "warm", 2, workers)
				b.ResetTimer()
				st := runRows(b, d, "r", b.N, workers)
				b.StopTimer()
				b.ReportMetric(float64(st.Written)/b.Elapsed().Seconds(), "rows/s")
				b.ReportMetric(calls, "calls/row")
			})
		}
	}
}
