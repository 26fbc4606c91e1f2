package batch

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Out is one row of the output.
type Out struct {
	ID       string
	Key      string // the label of DK kept in the token, or DK wrapped, in hex
	KCV      string // DK's check value, in hex
	Strategy string // the strategy that computed DK
	KDF      string // the function DK is
}

// Output is the output CSV file, opened for appending complete rows.
//
// Rows are buffered and reach the file in whole rows only (a write never
// ends inside a row), and the file is synced periodically and on Close, so
// that a run stopped at any moment leaves a valid file. OpenOutput of a file
// that a killed run left with a partial last row cuts that row off — only
// once the whole file was read and proven to be an output of this kind of
// run: anything else is refused and left as it was. The file is locked
// (flock) while open: two runs cannot write it at once.
type Output struct {
	f        *os.File
	w        io.Writer // f, or the stream of OpenStream
	stream   bool      // stdout: no lock, no resume, no sync
	path     string
	header   []string
	manifest *Manifest
	done     [][16]byte // digests of the ids already in the file, sorted

	size     int64 // the file's length: complete rows only
	buf      bytes.Buffer
	csv      *csv.Writer // writes into buf
	rec      [5]string   // the record Write writes: its room, reused
	buffered int         // rows in buf
	dirty    bool        // written since the last sync
	synced   time.Time

	// Resumed is the number of rows the file held when it was opened.
	Resumed int
	// Truncated is the number of bytes of a partial last row cut off.
	Truncated int64
	// MovedAside is where OutputOptions.NewOutput moved the earlier output,
	// if it did.
	MovedAside string
}

// OutputOptions says what output a run writes.
type OutputOptions struct {
	// Header is the header row.
	Header []string
	// Manifest, when set, is the run's parameters: the file's first line
	// (a comment, see Manifest), and what a rerun must match.
	Manifest *Manifest
	// NewOutput starts a new output when the file is an output of this kind
	// whose manifest differs: the earlier output is renamed aside (path.1,
	// path.2…, never over an existing file), not touched otherwise.
	NewOutput bool
}

// flushAt is the buffer size past which complete rows are written.
const flushAt = 64 << 10

// OpenOutput opens the output at path with header and no manifest (see
// OpenOutputWith).
func OpenOutput(path string, header []string) (*Output, error) {
	return OpenOutputWith(path, OutputOptions{Header: header})
}

// OpenOutputWith opens the output file at path, making it (manifest and
// header) if it does not exist or is empty. If it holds anything, it must
// be an output of this kind of run: its manifest line, when opts has one,
// its header, then complete rows of the header's width, every one checked
// before the file is changed in any way; anything else is refused and the
// file left as it was. A manifest that differs from opts.Manifest is
// refused, naming the differences, unless opts.NewOutput. The ids of its
// rows are remembered so that a rerun skips them ([Output.Done]): 16 bytes
// per row, the only memory that grows with the data.
func OpenOutputWith(path string, opts OutputOptions) (*Output, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	}
	if err != nil {
		return nil, err
	}
	o := &Output{f: f, w: f, path: path, header: opts.Header, manifest: opts.Manifest}
	o.csv = csv.NewWriter(&o.buf)
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("output %s: another run is writing it", path)
		}
		return nil, fmt.Errorf("output %s: lock: %w", path, err)
	}
	err = o.load()
	var diff *ManifestDiffError
	if errors.As(err, &diff) && opts.NewOutput {
		aside, rerr := moveAside(path)
		f.Close()
		if rerr != nil {
			return nil, fmt.Errorf("output %s: --new-output: %w", path, rerr)
		}
		o2, err := OpenOutputWith(path, OutputOptions{Header: opts.Header, Manifest: opts.Manifest})
		if err != nil {
			return nil, err
		}
		o2.MovedAside = aside
		return o2, nil
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("output %s: %w", path, err)
	}
	return o, nil
}

// moveAside renames the file at path to the first free path.N, never over
// an existing file (renameat2 RENAME_NOREPLACE).
func moveAside(path string) (string, error) {
	for n := 1; n < 1000; n++ {
		to := fmt.Sprintf("%s.%d", path, n)
		err := unix.Renameat2(unix.AT_FDCWD, path, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
		if err == nil {
			return to, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", err
		}
	}
	return "", errors.New("no free name to move the earlier output to")
}

// OpenStream is an output written to w (stdout) as it goes: the manifest
// and the header, then the rows. Nothing is resumed and nothing synced.
func OpenStream(w io.Writer, opts OutputOptions) (*Output, error) {
	o := &Output{w: w, stream: true, path: "stdout", header: opts.Header, manifest: opts.Manifest}
	o.csv = csv.NewWriter(&o.buf)
	if err := o.writeHead(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Output) writeHead() error {
	if o.manifest != nil {
		line, err := o.manifest.line()
		if err != nil {
			return err
		}
		o.buf.WriteString(line)
	}
	o.csv.Write(o.header)
	o.csv.Flush()
	if _, err := o.Flush(); err != nil {
		return err
	}
	return o.Sync()
}

// notOurs is the error of a file that is not an output of this kind.
func notOurs(why string) error {
	return fmt.Errorf("%s: not an output of this kind of p11derive batch run; it was left as it was (give another --output)", why)
}

func (o *Output) load() error {
	st, err := o.f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file (a rerun must be able to read it back)")
	}
	if st.Size() == 0 {
		if _, err := o.f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		return o.writeHead()
	}
	// Read everything before changing anything: the head, then every
	// complete row.
	size, err := completeRows(o.f, st.Size())
	if err != nil {
		return err
	}
	if size == 0 {
		return o.restartPartialHead(st.Size())
	}
	offset, err := o.readHead(size)
	if err != nil {
		return err
	}
	if err := o.readDone(offset, size); err != nil {
		return err
	}
	if size < st.Size() {
		// A partial last row: the run that wrote it was killed mid-write.
		if err := o.f.Truncate(size); err != nil {
			return err
		}
		o.Truncated = st.Size() - size
	}
	o.Resumed = len(o.done)
	slices.SortFunc(o.done, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	o.size, err = o.f.Seek(0, io.SeekEnd)
	return err
}

// restartPartialHead handles an output of fileSize bytes without one
// complete line: it is ours only if it is the start of what this run writes
// first (a run killed while writing it); then it starts it again.
func (o *Output) restartPartialHead(fileSize int64) error {
	head := strings.Join(o.header, ",")
	if o.manifest != nil {
		head = manifestPrefix
	}
	b := make([]byte, min(fileSize, int64(len(head))+1))
	if _, err := o.f.ReadAt(b, 0); err != nil {
		return err
	}
	if fileSize > int64(len(head)) || !strings.HasPrefix(head, string(b)) {
		return notOurs("it holds no complete line and is not the start of an output")
	}
	if err := o.f.Truncate(0); err != nil {
		return err
	}
	o.Truncated = fileSize
	if _, err := o.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	return o.writeHead()
}

// readHead checks the manifest (if the run has one) and the header of the
// first size bytes of the output, and returns the offset of the first row.
func (o *Output) readHead(size int64) (int64, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(o.f, 0, size), 64<<10)
	var offset int64
	if o.manifest != nil {
		first, err := br.ReadSlice('\n')
		if err != nil || !bytes.HasPrefix(first, []byte(manifestPrefix)) {
			return 0, notOurs("its first line is not a p11derive batch manifest")
		}
		offset = int64(len(first))
		old, err := parseManifest(first)
		if err != nil {
			return 0, notOurs(err.Error())
		}
		if err := o.manifest.compare(old); err != nil {
			return 0, err
		}
		o.manifest.Run = old.Run // the run's pending keys are tied to the output's
	}
	hdr, err := br.ReadSlice('\n')
	if err != nil || string(bytes.TrimRight(hdr, "\r\n")) != strings.Join(o.header, ",") {
		line := strings.TrimRight(string(hdr), "\r\n")
		if len(line) > 80 {
			line = line[:80] + "…"
		}
		return 0, notOurs(fmt.Sprintf("its header is %q, this run writes %q", strings.ToValidUTF8(line, "?"), strings.Join(o.header, ",")))
	}
	offset += int64(len(hdr))
	return offset, nil
}

// readDone reads the ids of the rows between offset and size into o.done.
func (o *Output) readDone(offset, size int64) error {
	// One pass to count the rows, so that the set of ids is allocated once
	// at its size (16 bytes a row) rather than grown by doubling.
	lines, err := countNewlines(io.NewSectionReader(o.f, offset, size-offset))
	if err != nil {
		return err
	}
	o.done = make([][16]byte, 0, lines)
	r := csv.NewReader(io.NewSectionReader(o.f, offset, size-offset))
	r.ReuseRecord = true
	r.FieldsPerRecord = len(o.header)
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return notOurs(fmt.Sprintf("a row after the header: %v", err))
		}
		o.done = append(o.done, digest(rec[0]))
	}
	return nil
}

// completeRows returns the length of the file up to the end of its last
// complete line.
func completeRows(f *os.File, size int64) (int64, error) {
	buf := make([]byte, 4096)
	for end := size; end > 0; {
		start := max(end-int64(len(buf)), 0)
		b := buf[:end-start]
		if _, err := f.ReadAt(b, start); err != nil {
			return 0, err
		}
		if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

func countNewlines(r io.Reader) (int, error) {
	buf := make([]byte, 64<<10)
	n := 0
	for {
		k, err := r.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func digest(id string) [16]byte {
	s := sha256.Sum256([]byte(id))
	return [16]byte(s[:16])
}

// Done reports whether the file held a row for id when it was opened.
func (o *Output) Done(id string) bool {
	if len(o.done) == 0 {
		return false
	}
	d := digest(id)
	_, ok := slices.BinarySearchFunc(o.done, d, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	return ok
}

// Write adds a row. It reaches the file at the next Flush, or now if the
// buffer is full (in whole rows): n is the number of rows that reached the
// file by this call (0, or every row buffered).
func (o *Output) Write(out *Out) (n int, err error) {
	mark := o.buf.Len()
	o.rec = [5]string{out.ID, out.Key, out.KCV, out.Strategy, out.KDF}
	o.csv.Write(o.rec[:])
	o.csv.Flush()
	if err := o.csv.Error(); err != nil {
		o.buf.Truncate(mark)
		return 0, err
	}
	o.buffered++
	if o.buf.Len() >= flushAt {
		return o.Flush()
	}
	return 0, nil
}

// Discard drops the rows buffered and not yet written: after a write
// error, so that Close writes none of them.
func (o *Output) Discard() {
	o.csv.Flush()
	o.buf.Reset()
	o.buffered = 0
}

// Buffered is the number of rows written but not yet in the file.
func (o *Output) Buffered() int { return o.buffered }

// Flush writes the buffered rows to the file: n rows reached it. On error
// none of them did (what part was written is cut off) and they are
// dropped.
func (o *Output) Flush() (n int, err error) {
	o.csv.Flush()
	if o.buf.Len() == 0 {
		return 0, nil
	}
	rows := o.buffered
	k, err := o.w.Write(o.buf.Bytes())
	o.buf.Reset()
	o.buffered = 0
	o.dirty = true
	if err != nil {
		// Leave complete rows only: cut what part of a row was written.
		if k > 0 && o.f != nil && !o.stream && o.f.Truncate(o.size) == nil {
			o.f.Seek(o.size, io.SeekStart)
		}
		return 0, fmt.Errorf("output %s: %w", o.path, err)
	}
	o.size += int64(k)
	return rows, nil
}

// Sync flushes and commits the file to stable storage (call Flush first to
// know how many rows reached the file).
func (o *Output) Sync() error {
	if _, err := o.Flush(); err != nil {
		return err
	}
	if !o.dirty || o.stream {
		return nil
	}
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("output %s: sync: %w", o.path, err)
	}
	o.dirty = false
	o.synced = time.Now()
	return nil
}

// Close syncs and closes the file, which releases its lock. A stream is
// flushed, not closed.
func (o *Output) Close() error {
	err := o.Sync()
	if o.stream {
		return err
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	return err
}
