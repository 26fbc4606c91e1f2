package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/batch"
)

// batchLog is where batch reports progress, failed rows and its summary
// (stderr; tests replace it).
var batchLog io.Writer = os.Stderr

const batchUsage = `usage: p11derive batch [token flags] --base LABEL --kdf KDF --key-type TYPE [--len N]
                       --input IN.csv --output OUT.csv
                       [--wrap-key LABEL [--wrap-mech MECH] [--wrap-iv HEX] | --label-template dk-{id}]
                       [--workers N] [--fail-fast] [--max-rows N] [--no-session-copy] [--new-output]

Derives one key per row of IN.csv (header row; columns id, data and
optionally iv, data and iv in hex) inside the token, and appends one row per
key to OUT.csv: id, DK's label or DK wrapped under the transport key (hex),
DK's check value, the strategy and the function (kdf). A CBC function
takes each row's iv, or --iv when the row has none.

Keep mode (no --wrap-key): DK is a token object labelled from
--label-template. Wrap mode: DK is made sensitive and extractable, wrapped
under the transport key --wrap-key with --wrap-mech, and destroyed.

OUT.csv starts with a comment line holding the run's parameters (base and
transport keys by label, CKA_ID and check value, function, key type, label
template, version), then the header. An existing OUT.csv is used only if it
is an output of the same run: anything else is refused and left as it was
(--new-output moves an output of other parameters aside to OUT.csv.N and
starts afresh). --output - writes to stdout.

Several tokens (wrap mode only): repeat --uri, one per token holding the
same base and transport keys (proven by check value before any row); rows
go to the least busy token, and a token that fails as a device is taken
out and its rows derived on the others. Keep mode takes one token.

A bad row (an id that repeats an earlier row's, a line over 64 KiB among
them) is reported with its line and skipped (the batch stops at the first
failure with --fail-fast). Rerunning the same command after an interruption
or a kill skips the ids OUT.csv holds. Ctrl-C stops cleanly: every row
written has its key, no other key is left behind.

Flags:
`

func cmdBatch(args []string, stdout io.Writer) error {
	if isSchemeBatch(args) {
		return cmdBatchScheme(args, stdout)
	}
	var o batchOptions
	if err := o.parse(args); err != nil {
		return err
	}
	bf, ff, wrap := &o.bf, &o.ff, o.wrap
	s, err := bf.open(o.baseSel, batch.NewInput)
	if err != nil {
		return err
	}
	defer s.Close()
	prog := &batch.Progress{W: batchLog, Prefix: "p11derive batch", Every: o.every}
	var d *batch.Deriver
	var m *batch.Manifest
	if s.group != nil {
		d, m, err = newGroupDeriver(s, o.spec, wrap, o.wrapSel, prog)
	} else {
		d, m, err = newBatchDeriver(s, o.spec, wrap, o.wrapSel, *bf.template, o.sessionCopy, prog)
	}
	if err != nil {
		return err
	}

	return runBatch(stdout, s, bf, d, m, prog, o.newOutput, ff.profileOut)
}

// runBatch runs d over the input of s into the output --output, which
// carries the manifest m: the part of a batch after its deriver is made,
// the same for 'batch' and 'batch --scheme'. profileOut, if not empty,
// receives the profile of the first row derived.
func runBatch(stdout io.Writer, s *batchSetup, bf *batchFlags, d *batch.Deriver, m *batch.Manifest, prog *batch.Progress, newOutput bool, profileOut string) error {
	out, err := openBatchOutput(stdout, *bf.output, batch.OutputOptions{Header: d.Header(), Manifest: m, NewOutput: newOutput})
	if err != nil {
		return err
	}
	defer out.Close()
	d.Run = m.Run
	if out.MovedAside != "" {
		prog.Printf("%s was made with other parameters: moved aside to %s; starting a new output", *bf.output, out.MovedAside)
	}
	if d.Wrap == nil {
		unlock, err := prepareKeep(s.ctx, s.tok, d, *bf.template, *bf.output, prog)
		if err != nil {
			return err
		}
		defer unlock()
	}
	if out.Truncated > 0 {
		prog.Printf("%s: cut off a partial last row (%d bytes) left by an interrupted run", *bf.output, out.Truncated)
	}
	if out.Resumed > 0 {
		prog.Printf("%s holds %d rows already: their ids are skipped", *bf.output, out.Resumed)
	}
	if fd, ok := batchLog.(*os.File); ok && isTerminal(fd) {
		prog.Bar = true
		prog.Width = func() int { return termWidth(fd) }
	}
	calls0 := s.calls()
	st, runErr := bf.run(s, out, d, prog)
	if err := out.Close(); err != nil && runErr == nil && st.Stopped != "output" {
		runErr = err
	}
	prog.Clear()
	if err := writeProfile(d, profileOut); err != nil && runErr == nil {
		runErr = fmt.Errorf("p11derive: writing the profile: %w", err)
	}
	prog.Printf("%s", summary(st, *bf.workers, d.Adopted(), s.calls()-calls0))
	if s.group != nil {
		prog.Printf("%s", groupSummary(s.group))
	}
	if st.Stopped == "max-rows" {
		prog.Printf("stopped after --max-rows %d new rows: run the same command again to go on", *bf.maxRows)
	}
	return bf.end(st, runErr, prog)
}

// batchOptions are the command line of 'batch' (without --scheme),
// parsed and checked.
type batchOptions struct {
	bf                     batchFlags
	ff                     funcFlags
	every                  time.Duration
	sessionCopy, newOutput bool
	baseSel, wrapSel       derive.Selector
	wrap                   *batch.Wrap // nil in keep mode
	spec                   *funcSpec
}

func (o *batchOptions) parse(args []string) error {
	fs := flag.NewFlagSet("batch", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), batchUsage)
		fs.PrintDefaults()
	}
	bf, ff := &o.bf, &o.ff
	bf.register(fs, batchHelp{
		input:          "input CSV `file` (- for stdin): header row, columns id, data[, iv]",
		output:         "output CSV `file`, appended to; a rerun skips the ids it holds",
		wrapKey:        "the transport key: wrap each DK under it, and destroy it (wrap mode)",
		wrapIV:         "des3-cbc's IV, `hex` (default 8 zero bytes)",
		template:       "keep mode: DK's label, {id} replaced by the row's id",
		workers:        "rows derived at once",
		workersDefault: runtime.NumCPU(),
		maxRows:        "stop after `N` new rows (a rerun goes on from there)",
	})
	ff.register(fs)
	fs.DurationVar(&o.every, "progress-every", 10*time.Second, "when stderr is not a terminal, a progress line this often (0: none)")
	fs.BoolVar(&o.sessionCopy, "session-copy", true, "work from session copies of the base and transport keys (C_CopyObject, same protections, gone at the end):\nmuch faster on tokens that read token-object keys from storage on every use, such as NSS softoken's key database")
	noSessionCopy := fs.Bool("no-session-copy", false, "use the base and transport keys as they are (no --session-copy)")
	fs.BoolVar(&o.newOutput, "new-output", false, "when --output is an output of this kind made with other parameters, move it aside (to OUTPUT.N) and start a new one")
	var err error
	if o.baseSel, o.wrapSel, err = bf.parse(fs, args, &ff.base); err != nil {
		return err
	}
	if o.wrap, err = bf.wrap(); err != nil {
		return err
	}
	if err := bf.checkCounts(); err != nil {
		return err
	}
	if *noSessionCopy {
		o.sessionCopy = false
	}
	if n := len(bf.tf.uris); n > 1 {
		if o.wrap == nil {
			return usageError{fmt.Errorf("keep mode takes one token, and --uri was given %d times: a key kept on one of several tokens would exist there alone (give one --uri, or --wrap-key for wrap mode)", n)}
		}
		if bf.tf.label != "" || bf.tf.slot >= 0 {
			return usageError{errors.New("--token and --slot select one token: with several --uri, select each token in its URI")}
		}
	}
	o.spec, err = ff.spec()
	return err
}

// newBatchDeriver makes the deriver of a batch and its output's manifest:
// it finds the transport key of wrap mode, and works from session copies
// of the keys when sessionCopy says so and the token allows it.
func newBatchDeriver(s *batchSetup, spec *funcSpec, wrap *batch.Wrap, wrapSel derive.Selector, template string, sessionCopy bool, prog *batch.Progress) (*batch.Deriver, *batch.Manifest, error) {
	m := &batch.Manifest{Version: version, KDF: spec.kdf, Params: spec.params, Allow: spec.allow,
		Strategy: string(spec.strategy), KeyType: derive.KeyTypeName(spec.kt.CKK()), Len: spec.kt.Len()}
	if m.Strategy == "" {
		m.Strategy = "auto"
	}
	d := &batch.Deriver{Token: s.tok, LabelTemplate: template, Wrap: wrap, RowIVs: s.rows.HasIV(),
		Spec: batch.Spec{KDF: spec.kdf, Params: spec.params, KeyType: spec.kt, Strategy: spec.strategy, Allow: spec.allow}}
	if err := finishDeriver(s, d, m, wrapSel, sessionCopy, prog); err != nil {
		return nil, nil, err
	}
	return d, m, nil
}

// finishDeriver gives d (of newBatchDeriver or cmdBatchScheme) its keys
// and m their names: the base key, and in wrap mode the transport key
// found by wrapSel, both as session copies when sessionCopy says so and the
// token allows it (found before either is copied: a copy has its key's
// label). It checks d.
func finishDeriver(s *batchSetup, d *batch.Deriver, m *batch.Manifest, wrapSel derive.Selector, sessionCopy bool, prog *batch.Progress) error {
	ctx, tok, base, wrap := s.ctx, s.tok, s.base, d.Wrap
	m.Base, m.Mode = keyRef(ctx, tok, base), "keep"
	copyRefused := false
	sessionKey := func(k *derive.Key) *derive.Key {
		if !sessionCopy || copyRefused {
			return k
		}
		c, err := copyKey(ctx, tok, k)
		if err != nil {
			copyRefused = true
			prog.Printf("the token refused a session copy of %q (%s): using the keys as they are (slower on tokens that read token objects from storage on every use)", k.Label, err)
			return k
		}
		return c
	}
	if wrap != nil {
		var err error
		if wrap.Key, err = findKey(ctx, tok, wrapSel); err != nil {
			return fmt.Errorf("p11derive: transport key: %w", err)
		}
		m.Mode = "wrap"
		m.Wrap = &batch.WrapRef{Key: keyRef(ctx, tok, wrap.Key), Mech: wrap.Mech.Name, IV: hex.EncodeToString(wrap.IV)}
		if !wrap.Key.Sensitive { // the key itself: its copy may say otherwise
			prog.Printf("warning: transport key %q is not sensitive: whoever can read its value can unwrap every key of this batch", wrap.Key.Label)
		}
		d.Base = sessionKey(base)
		wrap.Key = sessionKey(wrap.Key)
	} else {
		m.LabelTemplate = d.LabelTemplate
		d.Base = sessionKey(base)
	}
	if err := d.Check(); err != nil {
		return fmt.Errorf("p11derive: %w", err)
	}
	return nil
}

// newGroupDeriver is newBatchDeriver for a group of tokens (wrap mode):
// the transport key is found on every token and proven the same by its
// check value, and the keys are used as they are (no session copies: a
// token back from a fault would have lost them).
func newGroupDeriver(s *batchSetup, spec *funcSpec, wrap *batch.Wrap, wrapSel derive.Selector, prog *batch.Progress) (*batch.Deriver, *batch.Manifest, error) {
	ctx := s.ctx
	m := &batch.Manifest{Version: version, Mode: "wrap", KDF: spec.kdf, Params: spec.params, Allow: spec.allow,
		Strategy: string(spec.strategy), KeyType: derive.KeyTypeName(spec.kt.CKK()), Len: spec.kt.Len(),
		Base: batch.KeyRef{Label: s.base.Label, ID: hex.EncodeToString(s.base.ID), KCV: hex.EncodeToString(s.group.CheckValue())}}
	if m.Strategy == "" {
		m.Strategy = "auto"
	}
	members := s.group.Members()
	wrap.Keys = map[*derive.Token]*derive.Key{}
	var kcv []byte
	for i, st := range members {
		k, err := findKey(ctx, st.Token, wrapSel)
		if err != nil {
			return nil, nil, fmt.Errorf("p11derive: transport key on %s: %w", st.Name, err)
		}
		c, err := st.Token.CheckValueBy(ctx, k, derive.KCVECB)
		if err != nil {
			return nil, nil, fmt.Errorf("p11derive: transport key on %s: its check value, which proves it the same on every token: %w", st.Name, err)
		}
		if i == 0 {
			kcv, wrap.Key = c.Value, k
			if !k.Sensitive {
				prog.Printf("warning: transport key %q is not sensitive: whoever can read its value can unwrap every key of this batch", k.Label)
			}
		} else if !bytes.Equal(c.Value, kcv) {
			return nil, nil, fmt.Errorf("p11derive: the transport keys differ: check value %x on %s, %x on %s", kcv, members[0].Name, c.Value, st.Name)
		}
		wrap.Keys[st.Token] = k
		info := st.Token.Info()
		m.Tokens = append(m.Tokens, fmt.Sprintf("%s (serial %s)", strings.TrimSpace(info.Label), strings.TrimSpace(info.SerialNumber)))
	}
	m.Wrap = &batch.WrapRef{Key: batch.KeyRef{Label: wrap.Key.Label, ID: hex.EncodeToString(wrap.Key.ID), KCV: hex.EncodeToString(kcv)},
		Mech: wrap.Mech.Name, IV: hex.EncodeToString(wrap.IV)}
	d := &batch.Deriver{Group: s.group, Wrap: wrap, RowIVs: s.rows.HasIV(),
		Spec: batch.Spec{KDF: spec.kdf, Params: spec.params, KeyType: spec.kt, Strategy: spec.strategy, Allow: spec.allow}}
	if err := d.Check(); err != nil {
		return nil, nil, fmt.Errorf("p11derive: %w", err)
	}
	return d, m, nil
}

// groupSummary is a line on the tokens of a group run: the rows each
// derived, and why a token is out.
func groupSummary(g *derive.Group) string {
	var parts []string
	for _, st := range g.Members() {
		p := fmt.Sprintf("%s: %d derivations", st.Name, st.Derived)
		if !st.Up {
			p += ", out (" + strings.TrimPrefix(st.Err.Error(), "p11derive: ") + ")"
		}
		parts = append(parts, p)
	}
	return "tokens: " + strings.Join(parts, "; ")
}

// openBatchOutput opens the output of a batch: path, or stdout for "-"
// (a new run each time: nothing to resume).
func openBatchOutput(stdout io.Writer, path string, opts batch.OutputOptions) (*batch.Output, error) {
	var out *batch.Output
	var err error
	if path == "-" {
		opts.Manifest.NewRun()
		out, err = batch.OpenStream(stdout, opts)
	} else {
		out, err = batch.OpenOutputWith(path, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("p11derive: %w", err)
	}
	return out, nil
}

// writeProfile writes the profile d learnt, if any, to path (if given).
func writeProfile(d *batch.Deriver, path string) error {
	p, ok := d.Profile()
	if !ok || path == "" {
		return nil
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err == nil {
		err = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	return err
}

// prepareKeep readies a keep-mode run: it takes the keep-mode lock, scans
// the token's labels and destroys what a killed run left under
// provisional labels. The caller calls the function returned when the run
// is over.
func prepareKeep(ctx context.Context, tok *derive.Token, d *batch.Deriver, template, output string, prog *batch.Progress) (func(), error) {
	// One keep-mode batch at a time over a label template on this
	// token, on this machine: the later waits, then finds the keys.
	unlock, err := keepLock(ctx, tok, template, prog)
	if err != nil {
		return nil, err
	}
	// One pass over the token's labels rather than a look-up per row.
	if _, err := d.Scan(ctx); err != nil {
		unlock()
		return nil, err
	}
	n, err := d.Cleanup(ctx)
	if err != nil {
		unlock()
		return nil, err
	}
	if n > 0 {
		prog.Printf("destroyed %d keys a killed run into %s left under provisional labels (their rows are derived again)", n, output)
	}
	return unlock, nil
}

// version is p11derive's version, recorded in batch outputs (set with
// -ldflags "-X main.version=...").
var version = "dev"

// keyRef names a key for the manifest: label, CKA_ID, and check value
// (the ecb convention, through a session copy with CKA_ENCRYPT for a key
// without it, as a group proves its keys) when the token computes one.
func keyRef(ctx context.Context, tok *derive.Token, k *derive.Key) batch.KeyRef {
	r := batch.KeyRef{Label: k.Label, ID: hex.EncodeToString(k.ID)}
	if kcv, err := tok.CheckValueBy(ctx, k, derive.KCVECB); err == nil {
		r.KCV = hex.EncodeToString(kcv.Value)
	}
	return r
}

// keepLock takes the lock of keep-mode batches over template on tok's
// token: a file in the user's runtime directory (or the temporary one),
// named by the token and the template, locked with flock. A second batch
// waits for the first to end, then finds its keys. It is a lock of this
// machine only: batches on two machines sharing a token are not
// serialised; the check after labelling each key (Deriver's claim) then
// fails the row of the later one rather than leave two keys under a label.
func keepLock(ctx context.Context, tok *derive.Token, template string, prog *batch.Progress) (func(), error) {
	info := tok.Info()
	h := sha256.Sum256([]byte(strings.Join([]string{info.ManufacturerID, info.Model, info.SerialNumber, info.Label, template}, "\x00")))
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("p11derive-keep-%x.lock", h[:8]))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("p11derive: keep-mode lock: %w", err)
	}
	said := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("p11derive: keep-mode lock %s: %w", path, err)
		}
		if !said {
			prog.Printf("another keep-mode batch over the labels %q of this token is running: waiting for it to end", template)
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, errors.New("p11derive: interrupted")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// copyKey makes a session copy of k in the token (see
// derive.Token.SessionCopy), under k's label for the messages.
func copyKey(ctx context.Context, tok *derive.Token, k *derive.Key) (*derive.Key, error) {
	c, err := tok.SessionCopy(ctx, k)
	if err != nil {
		return nil, err
	}
	c.Label = k.Label
	return c, nil
}

// summary is the last line of a run.
func summary(st batch.Stats, workers, adopted int, calls int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d rows read: %d written, %d failed", st.Read, st.Written, st.Failed)
	if st.Skipped > 0 {
		fmt.Fprintf(&b, ", %d already in the output", st.Skipped)
	}
	if st.Undone > 0 {
		fmt.Fprintf(&b, ", %d derived but not written (their keys destroyed)", st.Undone)
	}
	if adopted > 0 {
		fmt.Fprintf(&b, ", %d keys found in the token with no row (same check value as the row's key), listed as they are", adopted)
	}
	if done := st.Written + st.Failed + st.Undone; done > 0 && calls > 0 {
		fmt.Fprintf(&b, "; %.1f PKCS#11 calls per row", float64(calls)/float64(done))
	}
	rate := 0.0
	if st.Busy > 0 {
		rate = float64(st.Written) / st.Busy.Seconds()
	}
	fmt.Fprintf(&b, "; %s, %.0f derivations/s with %d workers", st.Elapsed.Round(time.Millisecond), rate, workers)
	return b.String()
}

// openInput opens the input (stdin for "-") and counts its lines, for the
// progress bar, when it is a regular file. It refuses an input that is the
// output.
func openInput(path, output string) (io.ReadCloser, int, error) {
	if path == "-" {
		return io.NopCloser(os.Stdin), 0, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("p11derive: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("p11derive: %w", err)
	}
	if ost, err := os.Stat(output); err == nil && os.SameFile(st, ost) {
		f.Close()
		return nil, 0, usageError{errors.New("--input and --output are the same file")}
	}
	if !st.Mode().IsRegular() {
		return f, 0, nil
	}
	lines, err := countLines(f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("p11derive: %s: %w", path, err)
	}
	return f, max(lines-1, 0), nil // less the header
}

// countLines counts the lines of r (a last line without a newline too).
func countLines(r io.Reader) (int, error) {
	buf := make([]byte, 64<<10)
	n, last := 0, byte('\n')
	for {
		k, err := r.Read(buf)
		if k > 0 {
			n += bytes.Count(buf[:k], []byte{'\n'})
			last = buf[k-1]
		}
		if err == io.EOF {
			if last != '\n' {
				n++
			}
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func termWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}
