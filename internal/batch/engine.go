package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p11derive/p11derive/derive"
)

// A Job makes the output row of an input row. Do is called from several
// goroutines at once. On error it leaves nothing behind. On success it may
// return an undo function, which Run calls when the row does not reach the
// output after all (the run was interrupted, or stopped by an earlier row,
// or the output could not be written), to remove what Do made, such as a
// token object.
type Job interface {
	Do(ctx context.Context, r *Row) (out Out, undo func(), err error)
}

// JobFunc adapts a function to a Job.
type JobFunc func(ctx context.Context, r *Row) (Out, func(), error)

// Do calls f.
func (f JobFunc) Do(ctx context.Context, r *Row) (Out, func(), error) { return f(ctx, r) }

// Config says how Run runs.
type Config struct {
	// Workers is the number of rows processed at once; zero means
	// runtime.NumCPU().
	Workers int
	// FailFast stops the run at the first failed row.
	FailFast bool
	// MaxRows stops reading after that many new rows (rows already in the
	// output do not count); the rows read are finished and written. Zero
	// means no limit.
	MaxRows int
	// MaxFailuresInARow stops the run when that many rows in a row failed
	// for a reason other than their own content (the token failing every
	// call, say). Zero means 50; a negative value, never.
	MaxFailuresInARow int
	// SyncEvery is how often the output is synced to stable storage while
	// rows are written; zero means every second. Written rows are flushed
	// to the file at every Tick.
	SyncEvery time.Duration
	// Tick is how often OnTick is called; zero means 200ms.
	Tick time.Duration
	// Total is the number of rows the input is believed to have, for
	// progress reports, or 0 if unknown.
	Total int

	// OnFailure is told of every failed row, in input order, from one
	// goroutine. Nil means no report.
	OnFailure func(*RowError)
	// OnTick is told the counts every Tick, from one goroutine.
	OnTick func(Stats)
}

// Stats counts what a run did.
type Stats struct {
	Read    int // rows read from the input (bad rows and rows already done included)
	Skipped int // rows whose id the output held already
	Written int // rows derived and in the output file (not merely buffered)
	Failed  int // rows that failed
	Undone  int // rows derived but not written, their keys removed (stop or interruption)
	Total   int // Config.Total

	Elapsed time.Duration // since Run started
	Busy    time.Duration // since the first row to derive was read
	Stopped string        // why the run ended early: "", "interrupted", "max-rows", "fail-fast", "failures", "output"
}

// Rate is the rows derived per second of Busy time.
func (s Stats) Rate() float64 {
	if s.Busy <= 0 {
		return 0
	}
	return float64(s.Written+s.Failed) / s.Busy.Seconds()
}

// ErrStopped is the error of a run stopped by a failed row (FailFast or
// MaxFailuresInARow).
var ErrStopped = errors.New("run stopped")

// item is a row on its way through the run.
type item struct {
	seq  int
	row  *Row
	out  Out
	undo func()
	err  error // a failure of the row (a *RowError for bad input rows)
	skip bool  // not run: the run was stopping
}

// Run reads the rows of in, runs job for each row whose id out does not hold
// yet, Workers at a time, and writes the results to out in input order. It
// streams: at most 4 rows per worker and 64 more (rounded up to a multiple
// of 16) are in flight, whatever the length of the input.
//
// A failed row is reported (OnFailure) and counted; the run goes on unless
// FailFast, or MaxFailuresInARow rows in a row failed for a reason other
// than their input. When ctx is cancelled, Run stops reading, waits for the
// rows in flight, undoes those not yet written, flushes the output and
// returns ctx's error: the output then holds exactly the rows whose keys
// exist (keep mode) or were wrapped. Run does not close out.
//
// The error is nil when the run reached the end of the input (or MaxRows),
// failed rows or not; otherwise ErrStopped, ctx's error, or the error that
// made reading the input or writing the output impossible.
func Run(ctx context.Context, in *Input, out *Output, job Job, cfg Config) (Stats, error) {
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	r := &run{
		ctx: ctx, in: in, out: out, job: job, cfg: cfg,
		maxInARow: cfg.MaxFailuresInARow,
		syncEvery: cfg.SyncEvery,
		start:     time.Now(),
		st:        Stats{Total: cfg.Total},
	}
	if r.maxInARow == 0 {
		r.maxInARow = 50
	}
	if r.syncEvery <= 0 {
		r.syncEvery = time.Second
	}
	tick := cfg.Tick
	if tick <= 0 {
		tick = 200 * time.Millisecond
	}

	// stop ends the reading and the work; the writer undoes what comes back.
	r.runCtx, r.stop = context.WithCancel(ctx)
	defer r.stop()

	// Rows in flight, in order: 4 per worker and 64 more, in whole
	// chunks, so that the reader, the workers and the writer seldom wait
	// for one another (each wait is a goroutine parked and woken, which
	// costs more than a row on a fast token: 4 per worker alone ran NSS
	// softoken at 0.28 of a C loop). Memory stays bounded: at most that
	// many rows of at most MaxLine bytes each.
	chunks := (4*workers + 64 + chunk - 1) / chunk
	r.window = make(chan struct{}, chunks)
	r.jobs = make(chan *item, chunks*chunk)
	r.results = make(chan []*item, chunks*chunk)
	r.pending = make([]*item, chunks*chunk)
	var wg sync.WaitGroup

	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(r.jobs)
		r.readRows()
	}()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work()
		}()
	}
	go func() {
		wg.Wait()
		close(r.results)
	}()

	// The writer: this goroutine.
	r.writeRows(tick)
	r.finish()
	return r.stats(), r.runErr
}

// chunk is how many rows go through the run's stages at a time: the
// window of rows in flight is counted in chunks, and a worker hands its
// results to the writer in chunks. A row passed to a goroutine that waits
// for it wakes that goroutine (a futex call and a thread scheduled, more
// than a microsecond here); a chunk shares the wake between its rows.
const chunk = 16

// run is the state of one Run: its three stages are the reader
// (readRows, one goroutine), the workers (work, Workers goroutines) and
// the writer (writeRows, Run's own goroutine).
type run struct {
	ctx    context.Context // the caller's
	runCtx context.Context // ctx, cancelled by stop
	stop   context.CancelFunc
	in     *Input
	out    *Output
	job    Job
	cfg    Config

	maxInARow int
	syncEvery time.Duration
	start     time.Time

	window  chan struct{} // a slot per chunk of rows in flight
	jobs    chan *item    // from the reader to the workers
	results chan []*item  // from the reader and the workers to the writer

	// The reader's. inputErr and maxRowsHit are set before jobs is
	// closed, and read by the writer once results is closed.
	read, skipped atomic.Int64
	busySince     atomic.Int64 // UnixNano of the first row to derive
	inputErr      error
	maxRowsHit    bool

	// The writer's.
	pending   []*item // the results come back, by seq modulo its length
	st        Stats
	runErr    error
	stopping  bool
	inARow    int
	writeFail error
	// inBuf are the undo functions of the rows written to the output's
	// buffer but not yet to the file: a row counts as written once it
	// reached the file, and a row that cannot reach it is undone.
	inBuf []func()
}

// readRows is the reader: it reads the input, sends the rows to derive to
// the workers and bad rows straight to the writer, and skips the rows the
// output holds already. The caller closes jobs when it returns.
func (r *run) readRows() {
	seq, n := 0, 0
	seen := map[[16]byte]int32{} // the ids read, and their lines
	for {
		if r.cfg.MaxRows > 0 && n >= r.cfg.MaxRows {
			r.maxRowsHit = true
			return
		}
		row, err := r.in.Next()
		if err == io.EOF {
			return
		}
		var re *RowError
		if err != nil && !errors.As(err, &re) {
			// The rows read so far are finished and written.
			r.inputErr = fmt.Errorf("reading the input: %w", err)
			return
		}
		r.read.Add(1)
		if row != nil {
			// An id is one key: a repeated id is a bad row, whether its
			// first row is done in this run or was in the output.
			d := digest(row.ID)
			if first, dup := seen[d]; dup {
				re = &RowError{Line: row.Line, ID: printable(row.ID), Err: fmt.Errorf("%w: id repeats line %d", ErrBadRow, first)}
			} else {
				seen[d] = int32(row.Line)
				if r.out.Done(row.ID) {
					r.skipped.Add(1)
					continue
				}
			}
		}
		n++
		if r.busySince.Load() == 0 {
			r.busySince.Store(time.Now().UnixNano())
		}
		if seq%chunk == 0 {
			select {
			case r.window <- struct{}{}:
			case <-r.runCtx.Done():
				return
			}
		}
		it := &item{seq: seq, row: row}
		seq++
		if re != nil {
			it.err = re
			r.results <- []*item{it}
			continue
		}
		r.jobs <- it // workers drain jobs until it is closed
	}
}

// work is a worker: it runs the job on the rows of jobs until jobs is
// closed, and marks skipped those that come once the run is stopping. It
// hands its results to the writer a chunk at a time, or sooner: whatever it
// holds before it would wait for a row (the writer may be waiting for
// them), and when a millisecond passed since it last did or waited (a slow
// token's rows are written as they come: waking the writer costs nothing
// beside them). A row that stalls in the token holds the rows its worker
// finished before it (15 at most) until it returns: they are written late,
// never lost, and a run killed meanwhile leaves them to the rerun, as any
// row in flight (keep mode finds their keys).
func (r *run) work() {
	done := make([]*item, 0, chunk)
	since := time.Now() // when it last handed over or waited
	for {
		var it *item
		ok := true
		select {
		case it, ok = <-r.jobs:
		default:
			done = r.handOver(done)
			it, ok = <-r.jobs
			since = time.Now()
		}
		if !ok {
			r.handOver(done)
			return
		}
		if r.runCtx.Err() != nil {
			it.skip = true
		} else {
			it.out, it.undo, it.err = r.job.Do(r.runCtx, it.row)
		}
		done = append(done, it)
		if now := time.Now(); len(done) == chunk || now.Sub(since) >= time.Millisecond {
			done, since = r.handOver(done), now
		}
	}
}

// handOver sends done to the writer, if it holds any result, and returns
// a new slice for the next.
func (r *run) handOver(done []*item) []*item {
	if len(done) == 0 {
		return done
	}
	r.results <- done
	return make([]*item, 0, chunk)
}

// writeRows is the writer: it takes the results in input order until
// results is closed, writes or undoes them, and every tick flushes (and
// now and then syncs) the output and reports progress.
func (r *run) writeRows(tick time.Duration) {
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	next := 0
	lastSync := time.Now()
	for {
		select {
		case done, ok := <-r.results:
			if !ok {
				return
			}
			// Rows in flight are fewer than pending's length (the window),
			// so each has its own place.
			for _, it := range done {
				r.pending[it.seq%len(r.pending)] = it
			}
			for {
				i := next % len(r.pending)
				it := r.pending[i]
				if it == nil || it.seq != next {
					break
				}
				r.pending[i] = nil
				if next++; next%chunk == 0 {
					<-r.window
				}
				r.handle(it)
			}
		case <-ticker.C:
			if !r.stopping && r.ctx.Err() != nil {
				r.halt("interrupted", r.ctx.Err())
			}
			if r.writeFail == nil {
				sync := time.Since(lastSync) >= r.syncEvery
				if r.flush(sync) == nil && sync {
					lastSync = time.Now()
				}
			}
			if r.cfg.OnTick != nil {
				r.cfg.OnTick(r.stats())
			}
		}
	}
}

// handle writes, undoes or counts as failed one row, in input order.
func (r *run) handle(it *item) {
	if !r.stopping && r.ctx.Err() != nil {
		r.halt("interrupted", r.ctx.Err())
	}
	switch {
	case it.skip:
	case r.stopping:
		if it.err == nil {
			if it.undo != nil {
				it.undo()
			}
			r.st.Undone++
		}
	case it.err != nil:
		if errors.Is(it.err, context.Canceled) && r.runCtx.Err() != nil {
			return // the row was cut short by the stop, not failed
		}
		r.failed(it)
	default:
		r.inARow = 0
		r.inBuf = append(r.inBuf, it.undo)
		n, err := r.out.Write(&it.out)
		if err != nil {
			r.lost(err)
			return
		}
		r.written(n)
	}
}

// failed counts and reports a failed row, and stops the run if FailFast
// or MaxFailuresInARow says so.
func (r *run) failed(it *item) {
	r.st.Failed++
	re, ok := it.err.(*RowError)
	if !ok {
		re = &RowError{Line: it.row.Line, ID: printable(it.row.ID), Err: it.err}
	}
	if r.cfg.OnFailure != nil {
		r.cfg.OnFailure(re)
	}
	if r.cfg.FailFast {
		r.halt("fail-fast", fmt.Errorf("%w at %v", ErrStopped, re))
		return
	}
	if isInputError(it.err) {
		r.inARow = 0
	} else if r.inARow++; r.maxInARow > 0 && r.inARow >= r.maxInARow {
		r.halt("failures", fmt.Errorf("%w: %d rows in a row failed, the last at %v", ErrStopped, r.inARow, re))
	}
}

// finish flushes and syncs the output once the writer is done, and says
// why the run ended.
func (r *run) finish() {
	if r.writeFail == nil {
		if err := r.flush(true); err != nil && r.runErr == nil {
			r.runErr = err
		}
	}
	if r.inputErr != nil && r.runErr == nil {
		r.st.Stopped, r.runErr = "input", r.inputErr
	}
	if r.maxRowsHit && r.st.Stopped == "" {
		r.st.Stopped = "max-rows"
	}
}

// halt stops the run, the first time, for why.
func (r *run) halt(why string, err error) {
	if !r.stopping {
		r.stopping, r.st.Stopped, r.runErr = true, why, err
		r.stop()
	}
}

// flush writes the rows in the output's buffer to the file and, when
// sync, syncs it: the rows count as written once they reached the file;
// rows that cannot reach it are undone (lost), and a failed sync stops
// the run. It returns the output's error.
func (r *run) flush(sync bool) error {
	n, err := r.out.Flush()
	if err != nil {
		r.lost(err)
		return err
	}
	r.written(n)
	if !sync {
		return nil
	}
	if err := r.out.Sync(); err != nil {
		r.writeFail = err
		r.halt("output", err)
		return err
	}
	return nil
}

// written counts the n rows that reached the file.
func (r *run) written(n int) {
	if n > 0 {
		r.st.Written += n
		r.inBuf = r.inBuf[:0]
	}
}

// lost undoes the rows in the output's buffer, which cannot reach the
// file, and stops the run.
func (r *run) lost(err error) {
	for _, undo := range r.inBuf {
		if undo != nil {
			undo()
		}
		r.st.Undone++
	}
	r.inBuf = r.inBuf[:0]
	r.out.Discard()
	r.writeFail = err
	r.halt("output", err)
}

// stats is the counts so far.
func (r *run) stats() Stats {
	s := r.st
	s.Read, s.Skipped = int(r.read.Load()), int(r.skipped.Load())
	s.Elapsed = time.Since(r.start)
	if b := r.busySince.Load(); b != 0 {
		s.Busy = time.Since(time.Unix(0, b))
	}
	return s
}

// isInputError reports whether a row failed for its own content.
func isInputError(err error) bool {
	return errors.Is(err, ErrBadRow) || errors.Is(err, derive.ErrInvalidInput)
}
