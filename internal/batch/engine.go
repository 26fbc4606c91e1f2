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
// streams: at most 4 rows per worker and 64 more are in flight, whatever the length
// of the input.
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
	maxInARow := cfg.MaxFailuresInARow
	if maxInARow == 0 {
		maxInARow = 50
	}
	syncEvery := cfg.SyncEvery
	if syncEvery <= 0 {
		syncEvery = time.Second
	}
	tick := cfg.Tick
	if tick <= 0 {
		tick = 200 * time.Millisecond
	}
	start := time.Now()

	// stop ends the reading and the work; the writer undoes what comes back.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()

	var (
		read, skipped atomic.Int64
		busySince     atomic.Int64 // UnixNano of the first row to derive
		inputErr      error        // set by the reader before it closes jobs
		maxRowsHit    bool
	)
	// Rows in flight, in order: 4 per worker and 64 more, so that the
	// reader, the workers and the writer seldom wait for one another (each
	// wait is a goroutine parked and woken, which costs more than a row on
	// a fast token: 4 per worker alone ran NSS softoken at 0.28 of a C
	// loop). Memory stays bounded: at most that many rows of at most
	// MaxLine bytes each.
	inFlight := 4*workers + 64
	window := make(chan struct{}, inFlight)
	jobs := make(chan *item, inFlight)
	results := make(chan *item, inFlight)
	var wg sync.WaitGroup

	// The reader.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(jobs)
		seq, n := 0, 0
		seen := map[[16]byte]int32{} // the ids read, and their lines
		for {
			if cfg.MaxRows > 0 && n >= cfg.MaxRows {
				maxRowsHit = true
				return
			}
			row, err := in.Next()
			if err == io.EOF {
				return
			}
			var re *RowError
			if err != nil && !errors.As(err, &re) {
				// The rows read so far are finished and written.
				inputErr = fmt.Errorf("reading the input: %w", err)
				return
			}
			read.Add(1)
			if row != nil {
				// An id is one key: a repeated id is a bad row, whether its
				// first row is done in this run or was in the output.
				d := digest(row.ID)
				if first, dup := seen[d]; dup {
					re = &RowError{Line: row.Line, ID: printable(row.ID), Err: fmt.Errorf("%w: id repeats line %d", ErrBadRow, first)}
				} else {
					seen[d] = int32(row.Line)
					if out.Done(row.ID) {
						skipped.Add(1)
						continue
					}
				}
			}
			n++
			busySince.CompareAndSwap(0, time.Now().UnixNano())
			select {
			case window <- struct{}{}:
			case <-runCtx.Done():
				return
			}
			it := &item{seq: seq, row: row}
			seq++
			if re != nil {
				it.err = re
				results <- it
				continue
			}
			jobs <- it // workers drain jobs until it is closed
		}
	}()

	// The workers.
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range jobs {
				if runCtx.Err() != nil {
					it.skip = true
				} else {
					it.out, it.undo, it.err = job.Do(runCtx, it.row)
				}
				results <- it
			}
		}()
	}
	go func() {
		wg.Wait()
		close(results)
	}()

	// The writer: this goroutine.
	var (
		st        = Stats{Total: cfg.Total}
		runErr    error
		stopping  bool
		inARow    int
		pending   = map[int]*item{}
		next      int
		lastSync  = time.Now()
		ticker    = time.NewTicker(tick)
		writeFail error
	)
	defer ticker.Stop()
	halt := func(why string, err error) {
		if !stopping {
			stopping, st.Stopped, runErr = true, why, err
			stop()
		}
	}
	// inBuf are the undo functions of the rows written to the output's
	// buffer but not yet to the file: a row counts as written once it
	// reached the file, and a row that cannot reach it is undone.
	var inBuf []func()
	written := func(n int) {
		if n > 0 {
			st.Written += n
			inBuf = inBuf[:0]
		}
	}
	lost := func(err error) {
		for _, undo := range inBuf {
			if undo != nil {
				undo()
			}
			st.Undone++
		}
		inBuf = inBuf[:0]
		out.Discard()
		writeFail = err
		halt("output", err)
	}
	stats := func() Stats {
		s := st
		s.Read, s.Skipped = int(read.Load()), int(skipped.Load())
		s.Elapsed = time.Since(start)
		if b := busySince.Load(); b != 0 {
			s.Busy = time.Since(time.Unix(0, b))
		}
		return s
	}
	handle := func(it *item) {
		if !stopping && ctx.Err() != nil {
			halt("interrupted", ctx.Err())
		}
		switch {
		case it.skip:
		case stopping:
			if it.err == nil {
				if it.undo != nil {
					it.undo()
				}
				st.Undone++
			}
		case it.err != nil:
			if errors.Is(it.err, context.Canceled) && runCtx.Err() != nil {
				return // the row was cut short by the stop, not failed
			}
			st.Failed++
			re, ok := it.err.(*RowError)
			if !ok {
				re = &RowError{Line: it.row.Line, ID: printable(it.row.ID), Err: it.err}
			}
			if cfg.OnFailure != nil {
				cfg.OnFailure(re)
			}
			if cfg.FailFast {
				halt("fail-fast", fmt.Errorf("%w at %v", ErrStopped, re))
				return
			}
			if isInputError(it.err) {
				inARow = 0
			} else if inARow++; maxInARow > 0 && inARow >= maxInARow {
				halt("failures", fmt.Errorf("%w: %d rows in a row failed, the last at %v", ErrStopped, inARow, re))
			}
		default:
			inARow = 0
			inBuf = append(inBuf, it.undo)
			n, err := out.Write(&it.out)
			if err != nil {
				lost(err)
				return
			}
			written(n)
		}
	}
	for done := false; !done; {
		select {
		case it, ok := <-results:
			if !ok {
				done = true
				break
			}
			pending[it.seq] = it
			for {
				it, ok := pending[next]
				if !ok {
					break
				}
				delete(pending, next)
				next++
				handle(it)
				<-window
			}
		case <-ticker.C:
			if !stopping && ctx.Err() != nil {
				halt("interrupted", ctx.Err())
			}
			if writeFail == nil {
				n, err := out.Flush()
				if err != nil {
					lost(err)
				} else {
					written(n)
					if time.Since(lastSync) >= syncEvery {
						if err := out.Sync(); err != nil {
							writeFail = err
							halt("output", err)
						}
						lastSync = time.Now()
					}
				}
			}
			if cfg.OnTick != nil {
				cfg.OnTick(stats())
			}
		}
	}
	if writeFail == nil {
		n, err := out.Flush()
		if err != nil {
			lost(err)
		} else {
			written(n)
			err = out.Sync()
		}
		if err != nil {
			halt("output", err)
			if runErr == nil {
				runErr = err
			}
		}
	}
	if inputErr != nil && runErr == nil {
		st.Stopped, runErr = "input", inputErr
	}
	if maxRowsHit && st.Stopped == "" {
		st.Stopped = "max-rows"
	}
	return stats(), runErr
}

// isInputError reports whether a row failed for its own content.
func isInputError(err error) bool {
	return errors.Is(err, ErrBadRow) || errors.Is(err, derive.ErrInvalidInput)
}
