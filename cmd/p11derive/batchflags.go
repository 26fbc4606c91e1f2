package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/batch"
)

// batchFlags are the flags 'batch' and 'batch --scheme' share, and the
// setup they share: the same checks, the same opening of the input, the
// token and the base key, the same run and the same ending.
type batchFlags struct {
	tf                                        tokenFlags
	wk                                        keyFlags
	input, output, wrapMech, wrapIV, template *string
	workers, maxRows                          *int
	failFast                                  *bool
	set                                       map[string]bool // the flags given
}

// batchHelp are the help texts, and the default number of workers, in
// which the two commands differ.
type batchHelp struct {
	input, output, wrapKey, wrapIV, template, workers, maxRows string
	workersDefault                                             int
}

func (b *batchFlags) register(fs *flag.FlagSet, h batchHelp) {
	b.tf.register(fs)
	b.input = fs.String("input", "", h.input)
	b.output = fs.String("output", "", h.output)
	b.wk.register(fs, "wrap-key", "wrap-key-id", h.wrapKey)
	b.wrapMech = fs.String("wrap-mech", "aes-key-wrap", "wrap mechanism: "+strings.Join(batch.WrapMechNames(), ", "))
	b.wrapIV = fs.String("wrap-iv", "", h.wrapIV)
	b.template = fs.String("label-template", "dk-{id}", h.template)
	b.workers = fs.Int("workers", h.workersDefault, h.workers)
	b.failFast = fs.Bool("fail-fast", false, "stop at the first failed row")
	b.maxRows = fs.Int("max-rows", 0, h.maxRows)
}

// parse parses args and checks what both commands need: the base key
// (base's flags or the token URI's object), the input and the output, and
// the transport key's selector.
func (b *batchFlags) parse(fs *flag.FlagSet, args []string, base *keyFlags) (baseSel, wrapSel derive.Selector, err error) {
	if err := parse(fs, args); err != nil {
		return baseSel, wrapSel, err
	}
	b.set = setFlags(fs)
	uriKey, err := b.tf.uriKey()
	if err != nil {
		return baseSel, wrapSel, err
	}
	if baseSel, err = base.required(uriKey); err != nil {
		return baseSel, wrapSel, err
	}
	if err := required("input", *b.input, "output", *b.output); err != nil {
		return baseSel, wrapSel, err
	}
	wrapSel, err = b.wk.selector(nil)
	return baseSel, wrapSel, err
}

// checkCounts refuses --workers below 1 and a negative --max-rows.
func (b *batchFlags) checkCounts() error {
	if *b.workers < 1 {
		return usageError{errors.New("--workers must be at least 1")}
	}
	if *b.maxRows < 0 {
		return usageError{errors.New("--max-rows must not be negative")}
	}
	return nil
}

// wrap is the wrapping of wrap mode (without its key, found later), or
// nil in keep mode, once the flags of the other mode are refused.
func (b *batchFlags) wrap() (*batch.Wrap, error) {
	if !b.wk.given() {
		if b.set["wrap-mech"] || b.set["wrap-iv"] {
			return nil, usageError{errors.New("--wrap-mech and --wrap-iv need --wrap-key")}
		}
		if !strings.Contains(*b.template, "{id}") {
			return nil, usageError{fmt.Errorf("--label-template %q lacks {id}: every key would get the same label", *b.template)}
		}
		return nil, nil
	}
	if b.set["label-template"] {
		return nil, usageError{errors.New("--label-template is for keep mode: wrapped keys are not kept")}
	}
	return wrapFlags(*b.wrapMech, *b.wrapIV)
}

// wrapFlags is the Wrap of --wrap-mech and --wrap-iv (its key is found
// once the token is open), for the batch commands and the schemes.
func wrapFlags(mech, iv string) (*batch.Wrap, error) {
	m, err := batch.ParseWrapMech(mech)
	if err != nil {
		return nil, usageError{fmt.Errorf("--wrap-mech: %v", err)}
	}
	wrap := &batch.Wrap{Mech: m}
	if iv != "" {
		if wrap.IV, err = hexFlag("wrap-iv", iv); err != nil {
			return nil, err
		}
	}
	return wrap, nil
}

// batchSetup is what a batch command opened before its run: close it
// with Close.
type batchSetup struct {
	in    io.ReadCloser
	total int // the input's rows, or 0 if unknown
	rows  *batch.Input
	tok   *derive.Token // the token, or the group's first
	// toks and group: the tokens of several --uri, and their Group
	// (wrap mode); nil with one token.
	toks  []*derive.Token
	group *derive.Group
	ctx   context.Context // cancelled by Ctrl-C and SIGTERM, or by stop
	stop  context.CancelFunc
	base  *derive.Key
}

// open opens the input (read with newInput), the token and the base key.
func (b *batchFlags) open(baseSel derive.Selector, newInput func(io.Reader) (*batch.Input, error)) (_ *batchSetup, err error) {
	s := &batchSetup{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.in, s.total, err = openInput(*b.input, *b.output); err != nil {
		return nil, err
	}
	if s.rows, err = newInput(s.in); err != nil {
		return nil, fmt.Errorf("p11derive: %s: %w", *b.input, err)
	}
	if len(b.tf.uris) > 1 {
		s.ctx, s.stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		if err := s.openGroup(&b.tf, baseSel); err != nil {
			return nil, err
		}
		return s, nil
	}
	if s.tok, err = b.tf.open(); err != nil {
		return nil, err
	}
	s.ctx, s.stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if s.base, err = findKey(s.ctx, s.tok, baseSel); err != nil {
		return nil, err
	}
	return s, nil
}

// openGroup opens the tokens of every --uri and makes their Group: the
// base key found on each and proven the same by its check value. s.base
// is the first token's, for the manifest.
func (s *batchSetup) openGroup(tf *tokenFlags, baseSel derive.Selector) error {
	toks, err := tf.openAll(false, tf.uris)
	if err != nil {
		return err
	}
	s.toks, s.tok = toks, toks[0]
	if s.base, err = findKey(s.ctx, s.tok, baseSel); err != nil {
		return err
	}
	s.group, err = derive.NewGroup(s.ctx, derive.GroupConfig{Members: toks, Base: baseSel})
	return err
}

// calls is the PKCS#11 calls made so far on the token, or the tokens.
func (s *batchSetup) calls() int64 {
	if s.group == nil {
		return s.tok.Calls()
	}
	var n int64
	for _, t := range s.toks {
		n += t.Calls()
	}
	return n
}

// Close stops listening for signals and closes the token (or the group
// and its tokens) and the input.
func (s *batchSetup) Close() {
	if s.stop != nil {
		s.stop()
	}
	if s.group != nil {
		s.group.Close()
	}
	for _, t := range s.toks {
		t.Close()
	}
	if s.tok != nil {
		s.tok.Close()
	}
	if s.in != nil {
		s.in.Close()
	}
}

// run runs job over the input into out, reporting to prog, and stops
// listening for signals when it ends: a second Ctrl-C then ends the
// process.
func (b *batchFlags) run(s *batchSetup, out *batch.Output, job batch.Job, prog *batch.Progress) (batch.Stats, error) {
	if n := procsFor(*b.workers, runtime.GOMAXPROCS(0), runtime.NumCPU(), os.Getenv("GOMAXPROCS")); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	st, err := batch.Run(s.ctx, s.rows, out, job, batch.Config{
		Workers: *b.workers, FailFast: *b.failFast, MaxRows: *b.maxRows, Total: s.total,
		OnFailure: prog.Failure, OnTick: prog.Tick,
	})
	s.stop()
	return st, err
}

// end says how a run ended, once its summary is printed, and is the
// command's error.
func (b *batchFlags) end(st batch.Stats, runErr error, prog *batch.Progress) error {
	if st.Stopped == "interrupted" {
		prog.Printf("interrupted: %s lists every key made; run the same command again to go on", *b.output)
		return errors.New("p11derive: interrupted")
	}
	if runErr != nil {
		return fmt.Errorf("p11derive: %w", runErr)
	}
	if st.Failed > 0 {
		return fmt.Errorf("p11derive: %d of %d rows failed", st.Failed, st.Read-st.Skipped)
	}
	return nil
}

// procsFor is the GOMAXPROCS a batch of the given workers wants, or 0 to
// leave it (procs now). A worker waits for the token inside a cgo call,
// and a goroutine blocked in a cgo call keeps its P until the runtime's
// sysmon takes it back, tens of microseconds later: with more workers than
// Ps, workers whose call has returned wait for a P (on a network HSM,
// the round trips no longer overlap; make bench's latency table shows
// efficiency at W = 16 falling from ~0.7 with 64 Ps to ~0.5 with 2). So a
// batch runs with a P per worker, and the cores for the rest (reading,
// writing, the runtime), unless the user set GOMAXPROCS.
func procsFor(workers, procs, cpus int, env string) int {
	if env != "" || workers <= procs {
		return 0
	}
	return workers + cpus
}
