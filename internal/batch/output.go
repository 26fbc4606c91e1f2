package batch

import (
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

func (o *Out) record() []string { return []string{o.ID, o.Key, o.KCV, o.Strategy, o.KDF} }

// Output is the output CSV file, opened for appending complete rows.
//
// Rows are buffered and reach the file in whole rows only (a write never
// ends inside a row), and the file is synced periodically and on Close, so
// that a run stopped at any moment leaves a valid file. OpenOutput of a file
// that a killed run left with a partial last row cuts that row off. The
// file is locked (flock) while open: two runs cannot write it at once.
type Output struct {
	f      *os.File
	path   string
	header []string
	done   [][16]byte // digests of the ids already in the file, sorted

	size   int64 // the file's length: complete rows only
	buf    bytes.Buffer
	csv    *csv.Writer // writes into buf
	dirty  bool        // written since the last sync
	synced time.Time

	// Resumed is the number of rows the file held when it was opened.
	Resumed int
	// Truncated is the number of bytes of a partial last row cut off.
	Truncated int64
}

// flushAt is the buffer size past which complete rows are written.
const flushAt = 64 << 10

// OpenOutput opens the output file at path, making it with the header row if
// it does not exist or is empty. If it holds rows already, its header must be
// header (the same kind of run), and the ids of its rows are remembered so
// that a rerun skips them ([Output.Done]): 16 bytes per row, the only memory
// that grows with the data.
func OpenOutput(path string, header []string) (*Output, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	o := &Output{f: f, path: path, header: header}
	o.csv = csv.NewWriter(&o.buf)
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("output %s: another run is writing it", path)
		}
		return nil, fmt.Errorf("output %s: lock: %w", path, err)
	}
	if err := o.load(); err != nil {
		f.Close()
		return nil, fmt.Errorf("output %s: %w", path, err)
	}
	return o, nil
}

func (o *Output) load() error {
	st, err := o.f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return errors.New("not a regular file (a rerun must be able to read it back)")
	}
	size, err := completeRows(o.f, st.Size())
	if err != nil {
		return err
	}
	if size < st.Size() {
		// A partial last row: the run that wrote it was killed mid-write.
		if err := o.f.Truncate(size); err != nil {
			return err
		}
		o.Truncated = st.Size() - size
	}
	if size == 0 {
		if _, err := o.f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		o.csv.Write(o.header)
		if err := o.Flush(); err != nil {
			return err
		}
		return o.Sync()
	}
	// One pass to count the rows, so that the set of ids is allocated once
	// at its size (16 bytes a row) rather than grown by doubling.
	lines, err := countNewlines(io.NewSectionReader(o.f, 0, size))
	if err != nil {
		return err
	}
	o.done = make([][16]byte, 0, max(lines-1, 0))
	r := csv.NewReader(io.NewSectionReader(o.f, 0, size))
	r.ReuseRecord = true
	r.FieldsPerRecord = len(o.header)
	hdr, err := r.Read()
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if !slices.Equal(hdr, o.header) {
		return fmt.Errorf("its header is %q, this run writes %q: not the output of this kind of run", strings.Join(hdr, ","), strings.Join(o.header, ","))
	}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w (not written by p11derive batch? move it away to start afresh)", err)
		}
		o.done = append(o.done, digest(rec[0]))
	}
	o.Resumed = len(o.done)
	slices.SortFunc(o.done, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	o.size, err = o.f.Seek(0, io.SeekEnd)
	return err
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
// buffer is full (in whole rows).
func (o *Output) Write(out *Out) error {
	mark := o.buf.Len()
	o.csv.Write(out.record())
	o.csv.Flush()
	if err := o.csv.Error(); err != nil {
		o.buf.Truncate(mark)
		return err
	}
	if o.buf.Len() >= flushAt {
		return o.Flush()
	}
	return nil
}

// Flush writes the buffered rows to the file.
func (o *Output) Flush() error {
	o.csv.Flush()
	if o.buf.Len() == 0 {
		return nil
	}
	n, err := o.f.Write(o.buf.Bytes())
	o.buf.Reset()
	o.dirty = true
	if err != nil {
		// Leave complete rows only: cut what part of a row was written.
		if n > 0 && o.f.Truncate(o.size) == nil {
			o.f.Seek(o.size, io.SeekStart)
		}
		return fmt.Errorf("output %s: %w", o.path, err)
	}
	o.size += int64(n)
	return nil
}

// Sync flushes and commits the file to stable storage.
func (o *Output) Sync() error {
	if err := o.Flush(); err != nil {
		return err
	}
	if !o.dirty {
		return nil
	}
	if err := o.f.Sync(); err != nil {
		return fmt.Errorf("output %s: sync: %w", o.path, err)
	}
	o.dirty = false
	o.synced = time.Now()
	return nil
}

// Close syncs and closes the file, which releases its lock.
func (o *Output) Close() error {
	err := o.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	return err
}
