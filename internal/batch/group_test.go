package batch

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// groupMember is a member of a wrap-mode group run: its token, the lab
// token its objects are counted on (the real one, not its forwarder), and
// its base and transport keys.
type groupMember struct {
	lt         *labtok.Token
	real       *lab.Token
	base, wrap *derive.Key
}

// groupPair is two tokens of the kind (two SoftHSM2 instances, or the
// process's NSS key database and an NSS instance of its own), the second
// behind a forwarder, both holding K and T of the same values.
func groupPair(t *testing.T, kind string) ([2]*groupMember, *lab.Token) {
	t.Helper()
	var a, b *lab.Token
	if kind == labtok.SoftHSM2 {
		a = lab.SoftHSM2(t)
		a.Setenv(t)
		ma := &groupMember{lt: labtok.Open(t, kind, a), real: a}
		b = lab.SoftHSM2(t)
		b.Setenv(t)
		return finishPair(t, ma, b)
	}
	a, b = lab.NSSDB(t), lab.NSSDBInstance(t)
	return finishPair(t, &groupMember{lt: labtok.Open(t, kind, a), real: a}, b)
}

func finishPair(t *testing.T, ma *groupMember, b *lab.Token) ([2]*groupMember, *lab.Token) {
	t.Helper()
	w := fwd.Wrap(t, b, fwd.Config{})
	mb := &groupMember{lt: labtok.Open(t, ma.lt.Kind+"+fwd", w), real: b}
	for _, m := range []*groupMember{ma, mb} {
		m.base = m.lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-group", derive.UseDerive|derive.UseEncrypt)
		m.wrap = m.lt.ImportUses(t, pkcs11.CKK_AES, tValue, "T-group", derive.UseWrap|derive.UseUnwrap)
	}
	return [2]*groupMember{ma, mb}, w
}

// killFaults: every call that makes, finds or uses a key answers ckr; the
// clean-up (C_DestroyObject) and the session calls pass, standing in for
// a removed device that takes its session objects with it (which the
// forwarder cannot play).
// With funcs, only those functions fail.
func killFaults(ckr uint, funcs ...string) fwd.Config {
	if len(funcs) == 0 {
		funcs = []string{"C_DeriveKey", "C_GetAttributeValue", "C_EncryptInit", "C_Encrypt",
			"C_WrapKey", "C_FindObjectsInit", "C_CopyObject"}
	}
	var cfg fwd.Config
	for _, f := range funcs {
		cfg.Faults = append(cfg.Faults, fwd.Fault{Func: f, N: 1, From: true, CKR: ckr})
	}
	return cfg
}

// TestWrapGroupKill: a wrap-mode run over a group of two tokens, the
// second killed by the forwarder a third of the way in (every call answers
// CKR_DEVICE_REMOVED, or CKR_DEVICE_ERROR): every row is written exactly
// once, with the right wrapped key and check value (software reference),
// both members derived rows, and no DK is left on either token. In the
// wrap-only case only C_WrapKey fails: each row's DK is made on the member,
// its wrap fails, DK is destroyed and the row derived again on the other
// member (Group.Failed).
func TestWrapGroupKill(t *testing.T) {
	for _, c := range []struct {
		name, kind string
		ckr        uint
		funcs      []string
	}{
		{"softhsm2", labtok.SoftHSM2, pkcs11.CKR_DEVICE_REMOVED, nil},
		{"nssdb", labtok.NSSDB, pkcs11.CKR_DEVICE_ERROR, nil},
		{"wrap-only", labtok.SoftHSM2, pkcs11.CKR_DEVICE_ERROR, []string{"C_WrapKey"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ms, w := groupPair(t, c.kind)
			before := [2]int{lab.Objects(t, ms[0].real), lab.Objects(t, ms[1].real)}
			ctx := context.Background()
			g, err := derive.NewGroup(ctx, derive.GroupConfig{Members: []*derive.Token{ms[0].lt.Tok, ms[1].lt.Tok}, Base: derive.Selector{Label: "K-group"}, RetryAfter: time.Hour})
			require.NoError(t, err)
			defer g.Close()
			mech, err := ParseWrapMech("aes-key-wrap")
			require.NoError(t, err)
			d := &Deriver{Group: g, Spec: cbcSpec, RowIVs: true, Wrap: &Wrap{Key: ms[0].wrap, Mech: mech,
				Keys: map[*derive.Token]*derive.Key{ms[0].lt.Tok: ms[0].wrap, ms[1].lt.Tok: ms[1].wrap}}}
			const n = 90
			// The fault comes once rows 0 to n/3-1 are done (the second
			// member's share of them counted), before row n/3, and every
			// later row waits for it (rows are handed out in input order):
			// two thirds of the rows meet it, however the workers are
			// scheduled.
			var pre atomic.Int64
			killed := make(chan struct{})
			job := JobFunc(func(ctx context.Context, r *Row) (Out, func(), error) {
				i := r.Line - 2
				switch {
				case i == n/3:
					for pre.Load() < n/3 {
						time.Sleep(time.Millisecond)
					}
					fwd.Configure(t, w, killFaults(c.ckr, c.funcs...))
					close(killed)
				case i > n/3:
					<-killed
				}
				out, undo, err := d.Do(ctx, r)
				if i < n/3 {
					pre.Add(1)
				}
				return out, undo, err
			})
			src, rows := cbcInput(t, n)
			st, err, recs := runDeriver(t, ctx, d, job, src, filepath.Join(t.TempDir(), "out.csv"), Config{Workers: 4})
			require.NoError(t, err)
			require.Equal(t, n, st.Written)
			require.Zero(t, st.Failed)
			require.Len(t, recs, n)
			seen := map[string]bool{}
			for i, rec := range recs {
				r := rows[i]
				require.Equal(t, r.id, rec[0])
				require.False(t, seen[rec[0]], "row %s written twice", r.id)
				seen[rec[0]] = true
				assert.Equal(t, hex.EncodeToString(kw(t, tValue, kwIV, r.dk)), rec[1], "row %s: the wrap of the expected DK", r.id)
				assert.Equal(t, hex.EncodeToString(refKCV(t, "aes", r.dk)), rec[2], "row %s: check value", r.id)
			}
			st2 := g.Members()
			require.Positive(t, st2[0].Derived)
			require.Positive(t, st2[1].Derived, "the second member derived rows before the fault")
			require.False(t, st2[1].Up, "the killed member is out")
			require.ErrorIs(t, st2[1].Err, pkcs11.Error(c.ckr))
			t.Logf("rows by member: %d, %d; the fault: %v", st2[0].Derived, st2[1].Derived, st2[1].Err)
			fwd.Configure(t, w, fwd.Config{})
			for i, m := range ms {
				require.Equal(t, before[i], lab.Objects(t, m.real), "member %d: no DK left (its K and T only)", i+1)
			}
		})
	}
}

// TestGroupKeepRefused: keep mode refuses a group (a token object on one
// member alone), and a group run needs a transport key on every member.
func TestGroupKeepRefused(t *testing.T) {
	ms, _ := groupPair(t, labtok.SoftHSM2)
	g, err := derive.NewGroup(context.Background(), derive.GroupConfig{Members: []*derive.Token{ms[0].lt.Tok, ms[1].lt.Tok}, Base: derive.Selector{Label: "K-group"}})
	require.NoError(t, err)
	defer g.Close()
	d := &Deriver{Group: g, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128}, LabelTemplate: "dk-{id}"}
	require.ErrorContains(t, d.Check(), "keep mode takes one token")
	mech, err := ParseWrapMech("aes-key-wrap")
	require.NoError(t, err)
	d = &Deriver{Group: g, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128},
		Wrap: &Wrap{Key: ms[0].wrap, Mech: mech, Keys: map[*derive.Token]*derive.Key{ms[0].lt.Tok: ms[0].wrap}}}
	require.ErrorContains(t, d.Check(), "no transport key on group member")
}
