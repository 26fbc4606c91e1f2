package batch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// Keys of known value: the base key K (SP 800-38A's AES-128 key) and the
// transport keys.
var (
	kValue  = lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	tValue  = lab.Unhex("000102030405060708090a0b0c0d0e0f")
	t3Value = lab.Unhex("0123456789abcdeffedcba9876543210") // DES2
	flagIV  = lab.Unhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
)

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func uniq(t testing.TB) string { return hex.EncodeToString(randomBytes(t, 4)) }

// testRow is a row of a generated input, with the DK it should give.
type testRow struct {
	id         string
	data, iv   []byte
	dk         []byte
	lineInFile int
}

// cbcInput makes n rows for aes-cbc into AES-256 keys: every third row has
// its own IV, the others use flagIV.
func cbcInput(t testing.TB, n int) (string, []testRow) {
	var b strings.Builder
	b.WriteString("id,data,iv\n")
	var rows []testRow
	for i := range n {
		r := testRow{id: fmt.Sprintf("dev-%03d", i), data: randomBytes(t, 32), lineInFile: i + 2}
		iv := flagIV
		if i%3 == 1 {
			r.iv = randomBytes(t, 16)
			iv = r.iv
		}
		r.dk = refCBC(t, "aes", kValue, iv, r.data)
		fmt.Fprintf(&b, "%s,%x,%x\n", r.id, r.data, r.iv)
		rows = append(rows, r)
	}
	return b.String(), rows
}

var cbcSpec = Spec{KDF: "aes-cbc", Params: map[string]string{"iv": hex.EncodeToString(flagIV)}, KeyType: derive.KeyAES256}

// runDeriver runs d over src into a fresh output and returns its rows.
// The run's job is d, or job if given.
func runDeriver(t *testing.T, ctx context.Context, d *Deriver, job Job, src, path string, cfg Config) (Stats, error, [][]string) {
	t.Helper()
	require.NoError(t, d.Check())
	if job == nil {
		job = d
	}
	in, err := NewInput(strings.NewReader(src))
	require.NoError(t, err)
	out, err := OpenOutput(path, d.Header())
	require.NoError(t, err)
	st, runErr := Run(ctx, in, out, job, cfg)
	require.NoError(t, out.Close())
	return st, runErr, readCSV(t, path)[1:]
}

// unwrap brings a wrapped key back into the token with the transport key
// (C_UnwrapKey) as a session AES key, to compare it by check value.
func unwrap(t *testing.T, lt *labtok.Token, w *Wrap, wrapped []byte, n int) *derive.Key {
	t.Helper()
	var param []byte
	if w.Mech.iv {
		param = w.IV
	}
	k, err := lt.Tok.Unwrap(context.Background(), w.Key, w.Mech.CKM, param, wrapped,
		derive.KeySpec{Type: aesKey(t, n), Usage: derive.UseEncrypt})
	require.NoError(t, err, "unwrap with %s", w.Mech.Name)
	t.Cleanup(func() { lt.Tok.Destroy(context.Background(), k) })
	return k
}

func aesKey(t testing.TB, n int) derive.KeyType {
	kt, err := derive.ParseKeyType("aes", n)
	require.NoError(t, err)
	return kt
}

// TestWrapOut derives keys in wrap mode on every lab token with every wrap
// mechanism it runs, and checks each wrapped key three ways: against the
// software reference (the wrap of the expected DK under the known transport
// key), by unwrapping it back into the token and comparing its check value
// with that of a derivation done directly, and by the check value in the
// output. No DK is left in the token.
func TestWrapOut(t *testing.T) {
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		ctx := context.Background()
		base := lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-"+uniq(t), derive.UseDerive|derive.UseEncrypt|derive.UseSign|derive.UseUnwrap)
		aesT := lt.ImportUses(t, pkcs11.CKK_AES, tValue, "T-"+uniq(t), derive.UseWrap|derive.UseUnwrap)
		des2T := lt.ImportUses(t, pkcs11.CKK_DES2, t3Value, "T3-"+uniq(t), derive.UseWrap|derive.UseUnwrap)
		for _, c := range []struct {
			mech string
			iv   []byte
			ref  func(dk []byte) []byte
		}{
			{"aes-key-wrap", nil, func(dk []byte) []byte { return kw(t, tValue, kwIV, dk) }},
			{"aes-key-wrap-pad", nil, func(dk []byte) []byte {
				if lt.Kind == "softhsm2" {
					return kwp(t, tValue, dk) // RFC 5649
				}
				return kwPKCS7(t, tValue, dk) // PKCS#11 3.0
			}},
			{"des3-ecb", nil, func(dk []byte) []byte { return refECB(t, "des3", t3Value, dk) }},
			{"des3-cbc", nil, func(dk []byte) []byte { return refCBC(t, "des3", t3Value, make([]byte, 8), dk) }},
			{"des3-cbc", lab.Unhex("0102030405060708"), func(dk []byte) []byte { return refCBC(t, "des3", t3Value, lab.Unhex("0102030405060708"), dk) }},
		} {
			t.Run(c.mech, func(t *testing.T) {
				if lt.Kind == "softhsm2" && strings.HasPrefix(c.mech, "des3") {
					t.Skip("SoftHSM2 2.6.1 wraps with AES key wrap only")
				}
				m, err := ParseWrapMech(c.mech)
				require.NoError(t, err)
				w := &Wrap{Key: aesT, Mech: m, IV: c.iv}
				if strings.HasPrefix(c.mech, "des3") {
					w.Key = des2T
				}
				before := secretKeys(t, lt)
				src, rows := cbcInput(t, 12)
				d := &Deriver{Token: lt.Tok, Base: base, Spec: cbcSpec, Wrap: w, RowIVs: true}
				st, err, recs := runDeriver(t, ctx, d, nil, src, filepath.Join(t.TempDir(), "out.csv"), Config{Workers: 2})
				require.NoError(t, err)
				assert.Equal(t, 12, st.Written)
				require.Len(t, recs, 12)
				assert.Equal(t, before, secretKeys(t, lt), "every DK was destroyed")

				for i, rec := range recs {
					r := rows[i]
					require.Equal(t, r.id, rec[0])
					wrapped := lab.Unhex(rec[1])
					assert.Equal(t, hex.EncodeToString(c.ref(r.dk)), rec[1], "row %s: the wrap of the expected DK", r.id)
					assert.Equal(t, hex.EncodeToString(refKCV(t, "aes", r.dk)), rec[2], "row %s: check value", r.id)
					assert.Equal(t, "aes-cbc", rec[4])

					// Back into the token, and compared with a direct derivation.
					got, err := lt.Tok.CheckValue(ctx, unwrap(t, lt, w, wrapped, len(r.dk)))
					require.NoError(t, err)
					iv := flagIV
					if r.iv != nil {
						iv = r.iv
					}
					res, err := lt.Tok.Derive(ctx, base, derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.CBC, IV: iv}, Data: r.data, KeyType: derive.KeyAES256})
					require.NoError(t, err)
					direct, err := lt.Tok.CheckValue(ctx, res.Key)
					require.NoError(t, err)
					require.NoError(t, lt.Tok.Destroy(ctx, res.Key))
					assert.Equal(t, hex.EncodeToString(direct), hex.EncodeToString(got), "row %s: unwrapped key vs direct derivation", r.id)
					assert.Equal(t, rec[2], hex.EncodeToString(got))
				}
			})
		}
	})
}

// cancelAfter wraps a job to cancel the run after n rows were done.
func cancelAfter(job Job, n int64, cancel context.CancelFunc) Job {
	var calls atomic.Int64
	return JobFunc(func(ctx context.Context, r *Row) (Out, func(), error) {
		out, undo, err := job.Do(ctx, r)
		if calls.Add(1) == n {
			cancel()
		}
		return out, undo, err
	})
}

// TestWrapInterrupted cancels a wrap-mode run: no DK is left behind, and the
// output is valid and resumable.
func TestWrapInterrupted(t *testing.T) {
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		base := lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-"+uniq(t), derive.UseDerive|derive.UseEncrypt|derive.UseSign|derive.UseUnwrap)
		m, _ := ParseWrapMech("aes-key-wrap")
		w := &Wrap{Key: lt.ImportUses(t, pkcs11.CKK_AES, tValue, "T-"+uniq(t), derive.UseWrap|derive.UseUnwrap), Mech: m}
		before := secretKeys(t, lt)
		src, rows := cbcInput(t, 400)
		path := filepath.Join(t.TempDir(), "out.csv")
		d := &Deriver{Token: lt.Tok, Base: base, Spec: cbcSpec, Wrap: w, RowIVs: true}
		ctx, cancel := context.WithCancel(context.Background())
		st, err, recs := runDeriver(t, ctx, d, cancelAfter(d, 40, cancel), src, path, Config{Workers: 3})
		require.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, "interrupted", st.Stopped)
		assert.Less(t, len(recs), 400)
		assert.Equal(t, before, secretKeys(t, lt), "no DK left behind")

		st, err, recs = runDeriver(t, context.Background(), d, nil, src, path, Config{Workers: 3})
		require.NoError(t, err)
		assert.Equal(t, 400-st.Skipped, st.Written)
		require.Len(t, recs, 400)
		seen := map[string]bool{}
		for _, rec := range recs {
			require.False(t, seen[rec[0]], "id %s twice", rec[0])
			seen[rec[0]] = true
		}
		for _, r := range rows {
			assert.True(t, seen[r.id], r.id)
		}
		assert.Equal(t, before, secretKeys(t, lt))
	})
}

// TestKeep derives keys kept in the token as token objects, interrupts a
// run, and checks that the token holds exactly the keys the output lists;
// then a rerun finishes, adopting a key a killed run left unrecorded and
// refusing a different key that has a row's label.
//
// With scan, the run lists the token's labels first (Deriver.Scan, as the
// command does); without, every row looks its label up.
func TestKeep(t *testing.T) {
	for _, scan := range []bool{true, false} {
		t.Run(fmt.Sprintf("scan=%v", scan), func(t *testing.T) { testKeep(t, scan) })
	}
}

func testKeep(t *testing.T, scan bool) {
	labtok.ForKinds(t, []string{"softhsm2", "nssdb"}, func(t *testing.T, lt *labtok.Token) {
		base := lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-"+uniq(t), derive.UseDerive|derive.UseEncrypt|derive.UseSign|derive.UseUnwrap)
		prefix := "dk-" + uniq(t) + "-"
		t.Cleanup(func() { destroyLabelled(t, lt, prefix) })
		src, rows := cbcInput(t, 40)
		path := filepath.Join(t.TempDir(), "out.csv")
		d := &Deriver{Token: lt.Tok, Base: base, Spec: cbcSpec, LabelTemplate: prefix + "{id}", RowIVs: true}
		ctx := context.Background()

		// A killed run made the key of dev-005 and did not record it; somebody
		// else made a key labelled like dev-006's.
		adoptee, err := lt.Tok.Derive(ctx, base, derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.CBC, IV: flagIV},
			Data: rows[5].data, KeyType: derive.KeyAES256, Label: prefix + "dev-005", Persistent: true})
		require.NoError(t, err)
		_, err = lt.Tok.Derive(ctx, base, derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
			Data: rows[6].data, KeyType: derive.KeyAES256, Label: prefix + "dev-006", Persistent: true})
		require.NoError(t, err)

		if scan {
			n, err := d.Scan(ctx)
			require.NoError(t, err)
			assert.Equal(t, 2, n, "dev-005 and dev-006")
		}
		runCtx, cancel := context.WithCancel(ctx)
		var failures []*RowError
		cfg := Config{Workers: 2, OnFailure: func(e *RowError) { failures = append(failures, e) }}
		st, err, recs := runDeriver(t, runCtx, d, cancelAfter(d, 20, cancel), src, path, cfg)
		require.ErrorIs(t, err, context.Canceled)
		assert.Less(t, len(recs), 40)
		assert.Equal(t, len(recs), st.Written)
		keys := labelled(t, lt, prefix)
		for _, rec := range recs {
			assert.Equal(t, 1, keys[rec[1]], "the key of %s is in the token", rec[0])
			delete(keys, rec[1])
		}
		delete(keys, prefix+"dev-006") // not ours
		if len(recs) <= 5 {
			delete(keys, prefix+"dev-005")
		}
		assert.Empty(t, keys, "the token holds no key the output does not list")
		adoptedBefore, wroteDev005 := d.Adopted(), false
		for _, rec := range recs {
			wroteDev005 = wroteDev005 || rec[0] == "dev-005"
		}

		if scan {
			_, err := d.Scan(ctx)
			require.NoError(t, err)
		}
		st, err, recs = runDeriver(t, ctx, d, nil, src, path, cfg)
		require.NoError(t, err)
		require.Len(t, recs, 39, "every row but dev-006: %v", failures)
		// The run that wrote dev-005's row adopted its key (the first may
		// have adopted it and undone its row when stopped).
		if wroteDev005 {
			assert.Equal(t, 1, adoptedBefore)
			assert.Equal(t, adoptedBefore, d.Adopted())
		} else {
			assert.Equal(t, 1, d.Adopted()-adoptedBefore)
		}
		require.NotEmpty(t, failures)
		last := failures[len(failures)-1]
		assert.Equal(t, 8, last.Line)
		assert.Contains(t, last.Error(), "a different key is labelled")
		byID := map[string][]string{}
		for _, rec := range recs {
			byID[rec[0]] = rec
		}
		for _, r := range rows {
			if r.id == "dev-006" {
				continue
			}
			rec := byID[r.id]
			require.NotNil(t, rec, r.id)
			assert.Equal(t, prefix+r.id, rec[1])
			assert.Equal(t, hex.EncodeToString(refKCV(t, "aes", r.dk)), rec[2], r.id)
			k, err := lt.Tok.FindKey(ctx, prefix+r.id)
			require.NoError(t, err)
			assert.True(t, k.Token && k.Sensitive && !k.Extractable, r.id)
		}
		assert.Equal(t, adoptee.Key.Label, byID["dev-005"][1])
		keys = labelled(t, lt, prefix)
		assert.Len(t, keys, 40)
		for l, n := range keys {
			assert.Equal(t, 1, n, l)
		}
	})
}

// TestKeepRepeatedID: an id seen twice in one input is a bad row, with the
// same data or not: one key per id, none adopted, never two keys under one
// label.
func TestKeepRepeatedID(t *testing.T) {
	lt := labtok.Shared(t, "softhsm2")
	ctx := context.Background()
	base := lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-"+uniq(t), derive.UseDerive|derive.UseEncrypt)
	prefix := "rep-" + uniq(t) + "-"
	t.Cleanup(func() { destroyLabelled(t, lt, prefix) })
	d := &Deriver{Token: lt.Tok, Base: base, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128}, LabelTemplate: prefix + "{id}"}
	require.NoError(t, d.Check())
	_, err := d.Scan(ctx)
	require.NoError(t, err)
	src := "id,data\na,00112233445566778899aabbccddeeff\nb,0102030405060708090a0b0c0d0e0f10\na,00112233445566778899aabbccddeeff\nb,ffeeddccbbaa99887766554433221100\n"
	var failures []*RowError
	st, err, recs := runDeriver(t, ctx, d, nil, src, filepath.Join(t.TempDir(), "out.csv"),
		Config{Workers: 1, OnFailure: func(e *RowError) { failures = append(failures, e) }})
	require.NoError(t, err)
	assert.Equal(t, 2, st.Written)
	assert.Len(t, recs, 2)
	assert.Zero(t, d.Adopted())
	require.Len(t, failures, 2)
	assert.Equal(t, 4, failures[0].Line)
	assert.Contains(t, failures[0].Error(), `id "a"): bad row: id repeats line 2`)
	assert.Contains(t, failures[1].Error(), `id "b"): bad row: id repeats line 3`)
	for l, n := range labelled(t, lt, prefix) {
		assert.Equal(t, 1, n, l)
	}
}

// labelled returns the secret keys whose label starts with prefix.
func labelled(t testing.TB, lt *labtok.Token, prefix string) map[string]int {
	out := map[string]int{}
	for l, n := range secretKeys(t, lt) {
		if strings.HasPrefix(l, prefix) {
			out[l] = n
		}
	}
	return out
}

func destroyLabelled(t testing.TB, lt *labtok.Token, prefix string) {
	for l := range labelled(t, lt, prefix) {
		for {
			k, err := lt.Tok.FindKey(context.Background(), l)
			if err != nil {
				break
			}
			lt.Tok.Destroy(context.Background(), k)
		}
	}
}

// TestBadRowsOnToken: rows the function refuses are reported with their
// line and do not stop the batch.
func TestBadRowsOnToken(t *testing.T) {
	labtok.ForKinds(t, []string{"softhsm2", "nss"}, func(t *testing.T, lt *labtok.Token) {
		base := lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-"+uniq(t), derive.UseDerive|derive.UseEncrypt|derive.UseSign|derive.UseUnwrap)
		m, _ := ParseWrapMech("aes-key-wrap")
		w := &Wrap{Key: lt.ImportUses(t, pkcs11.CKK_AES, tValue, "T-"+uniq(t), derive.UseWrap|derive.UseUnwrap), Mech: m}
		src := "id,data,iv\n" +
			"a,6bc1bee22e409f96e93d7e117393172a,\n" + // line 2
			"b,6bc1bee22e409f96e93d7e11739317,\n" + // line 3: 15 bytes
			"c,6bc1bee22e409f96e93d7e117393172a,000102030405060708090a0b0c0d0e0f\n" + // line 4: ECB takes no iv
			"d,6bc1bee22e409f96e93d7e117393172a6bc1bee22e409f96e93d7e117393172a,\n" // line 5: fine (leading bytes)
		d := &Deriver{Token: lt.Tok, Base: base, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128}, Wrap: w, RowIVs: true}
		var failures []*RowError
		st, err, recs := runDeriver(t, context.Background(), d, nil, src, filepath.Join(t.TempDir(), "out.csv"),
			Config{Workers: 2, MaxFailuresInARow: 1, OnFailure: func(e *RowError) { failures = append(failures, e) }})
		require.NoError(t, err, "bad input does not count towards MaxFailuresInARow")
		assert.Equal(t, 2, st.Failed)
		require.Len(t, recs, 2)
		assert.Equal(t, "3ad77bb40d7a3660a89ecaf32466ef97", hex.EncodeToString(refECB(t, "aes", kValue, lab.Unhex("6bc1bee22e409f96e93d7e117393172a"))))
		assert.Equal(t, hex.EncodeToString(refKCV(t, "aes", lab.Unhex("3ad77bb40d7a3660a89ecaf32466ef97"))), recs[0][2])
		require.Len(t, failures, 2)
		assert.Equal(t, 3, failures[0].Line)
		assert.Contains(t, failures[0].Error(), `line 3 (id "b"): data`)
		assert.True(t, isInputError(failures[0]))
		assert.Equal(t, 4, failures[1].Line)
		assert.Contains(t, failures[1].Error(), "iv")
		assert.True(t, isInputError(failures[1]))
	})
}

// TestSubstitutePinned: when the first row runs an allowed substitute, every
// row computes it, and the profile says so.
func TestSubstitutePinned(t *testing.T) {
	lt := labtok.Shared(t, "nss")
	// K may only unwrap: no exact strategy for aes-ecb runs (native needs
	// CKA_DERIVE, mac-unwrap CKA_SIGN), the inverse function does.
	base := lt.ImportUses(t, pkcs11.CKK_AES, kValue, "K-"+uniq(t), derive.UseUnwrap)
	m, _ := ParseWrapMech("aes-key-wrap")
	w := &Wrap{Key: lt.ImportUses(t, pkcs11.CKK_AES, tValue, "T-"+uniq(t), derive.UseWrap|derive.UseUnwrap), Mech: m}
	var src strings.Builder
	src.WriteString("id,data\n")
	var datas [][]byte
	for i := range 10 {
		datas = append(datas, randomBytes(t, 16))
		fmt.Fprintf(&src, "r%d,%x\n", i, datas[i])
	}
	d := &Deriver{Token: lt.Tok, Base: base, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128, Allow: "aes-ecb-decrypt"}, Wrap: w}
	_, err, recs := runDeriver(t, context.Background(), d, nil, src.String(), filepath.Join(t.TempDir(), "out.csv"), Config{Workers: 2})
	require.NoError(t, err)
	require.Len(t, recs, 10)
	for i, rec := range recs {
		assert.Equal(t, "aes-ecb-decrypt", rec[4])
		assert.Equal(t, "unwrap", rec[3])
		dk := make([]byte, 16)
		refBlock(t, "aes", kValue).Decrypt(dk, datas[i])
		assert.Equal(t, hex.EncodeToString(kw(t, tValue, kwIV, dk)), rec[1])
	}
	p, ok := d.Profile()
	require.True(t, ok)
	assert.Equal(t, "aes-ecb-decrypt", p.KDF)
}

func TestCheck(t *testing.T) {
	tok := &derive.Token{}
	base := &derive.Key{}
	aesT := &derive.Key{Label: "T", Type: pkcs11.CKK_AES, Wrap: true}
	des2T := &derive.Key{Label: "T3", Type: pkcs11.CKK_DES2, Wrap: true}
	kw, _ := ParseWrapMech("aes-key-wrap")
	kwpad, _ := ParseWrapMech("aes-key-wrap-pad")
	cbc, _ := ParseWrapMech("des3-cbc")
	ecb, _ := ParseWrapMech("des3-ecb")
	aes := Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128}
	for _, c := range []struct {
		d   *Deriver
		err string
	}{
		{&Deriver{Spec: aes, LabelTemplate: "dk-{id}"}, ""},
		{&Deriver{Spec: aes, LabelTemplate: "dk"}, "lacks {id}"},
		{&Deriver{Spec: Spec{KDF: "aes-xyz", KeyType: derive.KeyAES128}, LabelTemplate: "dk-{id}"}, "unknown function"},
		{&Deriver{Spec: Spec{KDF: "aes-cbc", KeyType: derive.KeyAES128}, LabelTemplate: "dk-{id}"}, "aes-cbc needs an IV: give --iv, or an iv column"},
		{&Deriver{Spec: Spec{KDF: "aes-cbc", KeyType: derive.KeyAES128}, LabelTemplate: "dk-{id}", RowIVs: true}, ""},
		{&Deriver{Spec: aes, Wrap: &Wrap{Key: aesT, Mech: kw}}, ""},
		{&Deriver{Spec: aes, Wrap: &Wrap{Key: des2T, Mech: kw}}, "needs a transport key of type AES"},
		{&Deriver{Spec: aes, Wrap: &Wrap{Key: aesT, Mech: ecb}}, "needs a transport key of type DES3"},
		{&Deriver{Spec: aes, Wrap: &Wrap{Key: &derive.Key{Label: "T", Type: pkcs11.CKK_AES}, Mech: kw}}, "lacks CKA_WRAP"},
		{&Deriver{Spec: Spec{KDF: "des3-ecb", KeyType: derive.KeyDES}, Wrap: &Wrap{Key: aesT, Mech: kw}}, "cannot wrap a 8-byte key"},
		{&Deriver{Spec: Spec{KDF: "des3-ecb", KeyType: derive.KeyDES}, Wrap: &Wrap{Key: aesT, Mech: kwpad}}, ""},
		{&Deriver{Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyGeneric(20)}, Wrap: &Wrap{Key: des2T, Mech: ecb}}, "cannot wrap a 20-byte key"},
		{&Deriver{Spec: aes, Wrap: &Wrap{Key: des2T, Mech: cbc, IV: []byte{1}}}, "8-byte IV"},
		{&Deriver{Spec: aes, Wrap: &Wrap{Key: des2T, Mech: ecb, IV: make([]byte, 8)}}, "takes no IV"},
	} {
		c.d.Token, c.d.Base = tok, base
		err := c.d.Check()
		if c.err == "" {
			assert.NoError(t, err, c.d.Spec)
		} else {
			assert.ErrorContains(t, err, c.err, c.d.Spec)
		}
	}
	w := &Wrap{Key: des2T, Mech: cbc}
	require.NoError(t, (&Deriver{Token: tok, Base: base, Spec: aes, Wrap: w}).Check())
	assert.True(t, bytes.Equal(make([]byte, 8), w.IV), "des3-cbc's IV defaults to zero")
	_, err := ParseWrapMech("rsa")
	assert.ErrorContains(t, err, "aes-key-wrap, aes-key-wrap-pad, des3-ecb, des3-cbc")
}
