package batch

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
)

// genCSV generates an input of n rows r0..r(n-1) without holding it.
type genCSV struct {
	n, i   int
	buf    []byte
	bad    func(i int) bool // rows whose data is not hex
	prefix string           // of the ids; "r" if empty
}

func (g *genCSV) Read(p []byte) (int, error) {
	if g.prefix == "" {
		g.prefix = "r"
	}
	for len(g.buf) < len(p) && g.i <= g.n {
		switch {
		case g.i == 0:
			g.buf = append(g.buf, "id,data\n"...)
		case g.bad != nil && g.bad(g.i-1):
			g.buf = fmt.Appendf(g.buf, "%s%d,not-hex\n", g.prefix, g.i-1)
		default:
			g.buf = fmt.Appendf(g.buf, "%s%d,%032x\n", g.prefix, g.i-1, g.i)
		}
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// fakeJob plays a token: Do makes a "key" (an entry in live) that undo
// removes, after a random delay so that rows finish out of order.
type fakeJob struct {
	mu    sync.Mutex
	live  map[string]bool
	fail  func(id string) error
	after func(n int) // called after every Do, with the count of Do calls
	calls atomic.Int64
	sleep time.Duration
}

func (j *fakeJob) Do(ctx context.Context, r *Row) (Out, func(), error) {
	defer func() {
		if j.after != nil {
			j.after(int(j.calls.Add(1)))
		}
	}()
	if j.sleep > 0 {
		time.Sleep(time.Duration(rand.Int64N(int64(j.sleep))))
	}
	if j.fail != nil {
		if err := j.fail(r.ID); err != nil {
			return Out{}, nil, err
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.live == nil {
		j.live = map[string]bool{}
	}
	if j.live[r.ID] {
		return Out{}, nil, fmt.Errorf("key %s made twice", r.ID)
	}
	j.live[r.ID] = true
	undo := func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		delete(j.live, r.ID)
	}
	return Out{ID: r.ID, Key: "k-" + r.ID, KCV: "000000", Strategy: "fake", KDF: "fake"}, undo, nil
}

func (j *fakeJob) liveIDs() map[string]bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	m := map[string]bool{}
	for id := range j.live {
		m[id] = true
	}
	return m
}

// runFile runs the engine over gen into the output at path.
func runFile(t *testing.T, ctx context.Context, gen io.Reader, path string, job Job, cfg Config) (Stats, error) {
	t.Helper()
	in, err := NewInput(gen)
	require.NoError(t, err)
	out, err := OpenOutput(path, testHeader)
	require.NoError(t, err)
	st, err := Run(ctx, in, out, job, cfg)
	require.NoError(t, out.Close())
	return st, err
}

// outputIDs reads the ids of an output file, checking each appears once.
func outputIDs(t *testing.T, path string) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	for _, rec := range readCSV(t, path)[1:] {
		require.False(t, seen[rec[0]], "id %s twice in the output", rec[0])
		seen[rec[0]] = true
		ids = append(ids, rec[0])
	}
	return ids
}

func TestRunOrderAndFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	job := &fakeJob{sleep: 200 * time.Microsecond, fail: func(id string) error {
		if id == "r77" || id == "r154" {
			return errors.New("token says no")
		}
		return nil
	}}
	var failures []*RowError
	st, err := runFile(t, context.Background(), &genCSV{n: 500, bad: func(i int) bool { return i%50 == 49 }}, path, job,
		Config{Workers: 4, OnFailure: func(e *RowError) { failures = append(failures, e) }})
	require.NoError(t, err)
	assert.Equal(t, 500, st.Read)
	assert.Equal(t, 12, st.Failed) // 10 bad rows, 2 refused
	assert.Equal(t, 488, st.Written)
	assert.Empty(t, st.Stopped)

	ids := outputIDs(t, path)
	require.Len(t, ids, 488)
	var want []string
	for i := range 500 {
		if i%50 != 49 && i != 77 && i != 154 {
			want = append(want, fmt.Sprintf("r%d", i))
		}
	}
	assert.Equal(t, want, ids, "the output is in input order")
	require.Len(t, failures, 12)
	for i := 1; i < len(failures); i++ {
		assert.Less(t, failures[i-1].Line, failures[i].Line, "failures are reported in input order")
	}
	assert.Equal(t, 51, failures[0].Line) // r49, on line 51
	assert.ErrorIs(t, failures[0], ErrBadRow)
	assert.Equal(t, 79, failures[1].Line) // r77
	assert.Contains(t, failures[1].Error(), `line 79 (id "r77"): token says no`)
}

// TestRunInterruptAndResume cancels a run midway: the output lists exactly
// the keys that exist, and reruns finish the job without making a key twice.
func TestRunInterruptAndResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	const n = 2000
	ctx, cancel := context.WithCancel(context.Background())
	job := &fakeJob{sleep: 100 * time.Microsecond, after: func(calls int) {
		if calls == 300 {
			cancel()
		}
	}}
	st, err := runFile(t, ctx, &genCSV{n: n}, path, job, Config{Workers: 3})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, "interrupted", st.Stopped)
	ids := outputIDs(t, path)
	assert.NotEmpty(t, ids)
	assert.Less(t, len(ids), n)
	live := job.liveIDs()
	assert.Len(t, live, len(ids), "every key written is alive, every other one undone")
	for _, id := range ids {
		assert.True(t, live[id], id)
	}
	assert.Equal(t, len(ids), st.Written)

	// The rerun skips what is done; the job remembers its keys (the token).
	job.after = nil
	st, err = runFile(t, context.Background(), &genCSV{n: n}, path, job, Config{Workers: 3})
	require.NoError(t, err)
	assert.Equal(t, len(ids), st.Skipped)
	assert.Equal(t, n-len(ids), st.Written)
	ids = outputIDs(t, path)
	assert.Len(t, ids, n)
	assert.Len(t, job.liveIDs(), n)
}

func TestRunFailFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	job := &fakeJob{sleep: 100 * time.Microsecond, fail: func(id string) error {
		if id == "r30" {
			return errors.New("token says no")
		}
		return nil
	}}
	st, err := runFile(t, context.Background(), &genCSV{n: 1000}, path, job, Config{Workers: 4, FailFast: true})
	require.ErrorIs(t, err, ErrStopped)
	assert.Contains(t, err.Error(), `line 32 (id "r30")`)
	assert.Equal(t, "fail-fast", st.Stopped)
	ids := outputIDs(t, path)
	assert.Len(t, ids, 30, "the rows before the failure, and none after")
	assert.Len(t, job.liveIDs(), 30, "rows after the failure were undone")
	assert.Equal(t, 1, st.Failed)
}

func TestRunMaxRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	job := &fakeJob{}
	for i := 1; i <= 3; i++ {
		st, err := runFile(t, context.Background(), &genCSV{n: 25}, path, job, Config{Workers: 2, MaxRows: 10})
		require.NoError(t, err)
		assert.Equal(t, (i-1)*10, st.Skipped)
		if i < 3 {
			assert.Equal(t, "max-rows", st.Stopped)
			assert.Equal(t, 10, st.Written)
		} else {
			assert.Equal(t, 5, st.Written)
		}
	}
	assert.Len(t, outputIDs(t, path), 25)
}

func TestRunStopsWhenEveryRowFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	job := &fakeJob{fail: func(string) error {
		return &derive.TokenError{Step: "derive", Call: "C_DeriveKey", Err: errors.New("device error")}
	}}
	var reported int
	st, err := runFile(t, context.Background(), &genCSV{n: 10000}, path, job,
		Config{Workers: 2, OnFailure: func(*RowError) { reported++ }})
	require.ErrorIs(t, err, ErrStopped)
	assert.Contains(t, err.Error(), "50 rows in a row failed")
	assert.Equal(t, "failures", st.Stopped)
	assert.Equal(t, 50, st.Failed)
	assert.Equal(t, 50, reported)
	assert.Less(t, st.Read, 200, "the reading stopped")

	// Bad input rows do not count: they are the rows' fault.
	st, err = runFile(t, context.Background(), &genCSV{n: 300, bad: func(int) bool { return true }}, filepath.Join(t.TempDir(), "o.csv"), &fakeJob{}, Config{Workers: 2})
	require.NoError(t, err)
	assert.Equal(t, 300, st.Failed)
}

func TestRunInputFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	st, err := runFile(t, context.Background(), failingReader{strings.NewReader("id,data\na,00\nb,01\n")}, path, &fakeJob{}, Config{Workers: 2})
	require.ErrorContains(t, err, "disk on fire")
	assert.Equal(t, 2, st.Written, "the rows read are written")
	assert.Equal(t, []string{"a", "b"}, outputIDs(t, path))
}

// TestRunFlatMemory runs ten times more rows and finds the heap no larger:
// the engine streams. The live heap is sampled every 1,000 rows from inside
// the job (after a GC), so even a fast run has samples.
func TestRunFlatMemory(t *testing.T) {
	peak := func(n int) uint64 {
		var mu sync.Mutex
		var max uint64
		var rows int
		_, err := runFile(t, context.Background(), &genCSV{n: n}, filepath.Join(t.TempDir(), "out.csv"), JobFunc(
			func(ctx context.Context, r *Row) (Out, func(), error) {
				mu.Lock()
				rows++
				if rows%1000 == 0 {
					var ms runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > max {
						max = ms.HeapInuse
					}
				}
				mu.Unlock()
				return Out{ID: r.ID, Key: "00", KCV: "000000", Strategy: "s", KDF: "k"}, nil, nil
			}), Config{Workers: 2})
		require.NoError(t, err)
		return max
	}
	small, large := peak(4000), peak(40000)
	t.Logf("peak heap in use: %d KiB for 4,000 rows, %d KiB for 40,000", small>>10, large>>10)
	require.NotZero(t, small)
	assert.Less(t, large, small+2<<20, "memory grows with the input")
}

// fullDisk accepts limit bytes, then fails every write with ENOSPC, as a
// full disk does.
type fullDisk struct {
	bytes.Buffer
	limit int
}

func (d *fullDisk) Write(p []byte) (int, error) {
	if d.Len()+len(p) > d.limit {
		return 0, syscall.ENOSPC
	}
	return d.Buffer.Write(p)
}

// TestRunDiskFull: when the output cannot be written, the run stops, the
// rows that did not reach the file are undone (their keys removed), and
// the summary counts as written exactly the rows in the file.
func TestRunDiskFull(t *testing.T) {
	disk := &fullDisk{limit: 200 << 10}
	out, err := OpenStream(disk, OutputOptions{Header: testHeader})
	require.NoError(t, err)
	in, err := NewInput(&genCSV{n: 20000, prefix: "r"})
	require.NoError(t, err)
	job := &fakeJob{}
	st, err := Run(context.Background(), in, out, job, Config{Workers: 2})
	require.ErrorIs(t, err, syscall.ENOSPC)
	assert.Equal(t, "output", st.Stopped)
	r := csv.NewReader(bytes.NewReader(disk.Bytes()))
	recs, err := r.ReadAll()
	require.NoError(t, err, "whole rows only")
	assert.Equal(t, len(recs)-1, st.Written, "rows counted as written are in the file")
	assert.Len(t, job.liveIDs(), st.Written, "a key for every row in the file, and no other")
	assert.Positive(t, st.Undone)
}
