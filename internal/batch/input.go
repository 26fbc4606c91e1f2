package batch

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// The columns of the input. The header row names them, in any order; id
// and data are required, iv is optional.
const (
	ColID   = "id"
	ColData = "data"
	ColIV   = "iv"
)

// ErrBadRow marks a row whose own content is wrong (a missing id, data that
// is not hex, a field too many). Such a row is reported and skipped; the
// batch goes on.
var ErrBadRow = errors.New("bad row")

// Row is one row of the input.
type Row struct {
	Line int    // the input line the row starts on (1 is the header)
	ID   string // the caller's name for the key: a device UID, a PAN, ...
	Data []byte // derivation data
	IV   []byte // the row's own CBC IV, or nil to use the function's
	// Fields are the row's scheme inputs (NewSchemeInput), in the order
	// of its columns; nil for a derivation batch.
	Fields []string
}

// RowError is a row that failed: its line, its id (when it had one) and why.
type RowError struct {
	Line int
	ID   string
	Err  error
}

func (e *RowError) Error() string {
	msg := strings.TrimPrefix(e.Err.Error(), "p11derive: ")
	if e.ID != "" {
		return fmt.Sprintf("line %d (id %q): %s", e.Line, e.ID, msg)
	}
	return fmt.Sprintf("line %d: %s", e.Line, msg)
}

func (e *RowError) Unwrap() error { return e.Err }

// MaxLine is the longest input line, in bytes (its newline aside): a longer
// line is a bad row, skipped without being held in memory, so that memory
// stays flat whatever the input (an endless line included). A row is one
// line: a quoted field may not span lines.
const MaxLine = 64 << 10

// Markers that lines replaces a bad line with; Next reports them.
const (
	markLong  = "\x00p11derive: line too long"
	markQuote = "\x00p11derive: quoted field spans lines"
)

// lines passes its source through line by line, each line at most MaxLine
// bytes with its quotes balanced; a line that is not is replaced by a
// marker line (so that line numbers stay right), and its bytes are dropped
// as they come.
type lines struct {
	src  *bufio.Reader
	out  []byte // what is left of the current line to hand out
	eof  error
	skip bool // dropping the rest of a long line
}

func newLines(r io.Reader) *lines { return &lines{src: bufio.NewReaderSize(r, MaxLine+2)} }

func (l *lines) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if l.eof != nil {
			return 0, l.eof
		}
		line, err := l.src.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull:
			// Longer than MaxLine: drop it up to its newline.
			for err == bufio.ErrBufferFull {
				_, err = l.src.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				l.eof = err
			} else if err == io.EOF {
				l.eof = io.EOF
			}
			l.out = []byte(markLong + "\n")
			continue
		case err != nil:
			l.eof = err
		}
		if len(line) > MaxLine+1 || (len(line) == MaxLine+1 && line[len(line)-1] != '\n') {
			l.out = []byte(markLong + "\n")
			continue
		}
		if bytes.Count(line, []byte{'"'})%2 != 0 {
			l.out = []byte(markQuote + "\n")
			continue
		}
		l.out = line
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

// Input reads rows from CSV with a header row. It holds one row at a time.
type Input struct {
	r            *csv.Reader
	id, data, iv int   // column indexes; iv is -1 when there is no iv column
	n            int   // columns in the header
	fields       []int // a scheme batch's input columns (NewSchemeInput)
}

// NewSchemeInput reads the header of a scheme batch's input: an id column
// and the scheme's columns (cols: "pan", "ksn", ...), each required,
// except those in optional (which may be absent from the header, and are
// then "" in every row). Rows carry the fields as they are, for the
// scheme to check.
func NewSchemeInput(r io.Reader, cols, optional []string) (*Input, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1
	all := append(append([]string{}, cols...), optional...)
	names := strings.Join(append([]string{ColID}, all...), ",")
	hdr, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("input is empty: it needs a header row (%s)", names)
	}
	if err != nil {
		return nil, fmt.Errorf("input header: %w", err)
	}
	in := &Input{r: cr, id: -1, data: -1, iv: -1, n: len(hdr), fields: make([]int, len(all))}
	for i := range in.fields {
		in.fields[i] = -1
	}
	for i, name := range hdr {
		if i == 0 {
			name = strings.TrimPrefix(name, "\uFEFF")
		}
		name = strings.ToLower(strings.TrimSpace(name))
		col := -2
		if name == ColID {
			if in.id >= 0 {
				return nil, fmt.Errorf("input header: column %q appears twice", name)
			}
			in.id = i
			continue
		}
		for j, c := range all {
			if c == name {
				col = j
			}
		}
		if col < 0 {
			return nil, fmt.Errorf("input header: unknown column %q (the columns are %s)", name, names)
		}
		if in.fields[col] >= 0 {
			return nil, fmt.Errorf("input header: column %q appears twice", name)
		}
		in.fields[col] = i
	}
	if in.id < 0 {
		return nil, fmt.Errorf("input header: the column %s is required (found %s)", ColID, strings.Join(hdr, ","))
	}
	for j, c := range cols {
		if in.fields[j] < 0 {
			return nil, fmt.Errorf("input header: the column %s is required (found %s)", c, strings.Join(hdr, ","))
		}
	}
	return in, nil
}

// NewInput reads the header row of r and returns the reader of the rows
// that follow. The header must name an id and a data column and may name
// an iv column; column names are case-insensitive, and any other name is
// refused (a misspelt "iv" must not silently derive other keys).
func NewInput(r io.Reader) (*Input, error) {
	cr := csv.NewReader(newLines(r))
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1 // counted here, to report and go on
	hdr, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("input is empty: it needs a header row (%s,%s[,%s])", ColID, ColData, ColIV)
	}
	if err != nil {
		return nil, fmt.Errorf("input header: %w", err)
	}
	in := &Input{r: cr, id: -1, data: -1, iv: -1, n: len(hdr)}
	for i, name := range hdr {
		if i == 0 {
			name = strings.TrimPrefix(name, "\uFEFF") // a byte-order mark, as spreadsheets write
		}
		var col *int
		switch strings.ToLower(strings.TrimSpace(name)) {
		case ColID:
			col = &in.id
		case ColData:
			col = &in.data
		case ColIV:
			col = &in.iv
		default:
			return nil, fmt.Errorf("input header: unknown column %q (the columns are %s, %s and optionally %s)", name, ColID, ColData, ColIV)
		}
		if *col >= 0 {
			return nil, fmt.Errorf("input header: column %q appears twice", name)
		}
		*col = i
	}
	if in.id < 0 || in.data < 0 {
		return nil, fmt.Errorf("input header: the columns %s and %s are required (found %s)", ColID, ColData, strings.Join(hdr, ","))
	}
	return in, nil
}

// Next returns the next row, or io.EOF after the last. A bad row is a
// *RowError matching ErrBadRow, after which Next goes on with the next row;
// any other error (reading the input failed) ends the input.
func (in *Input) Next() (*Row, error) {
	rec, err := in.r.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, &RowError{Line: pe.StartLine, Err: fmt.Errorf("%w: %v", ErrBadRow, pe.Err)}
		}
		return nil, err
	}
	line, _ := in.r.FieldPos(0)
	row := &Row{Line: line}
	switch rec[0] {
	case markLong:
		return nil, &RowError{Line: line, Err: fmt.Errorf("%w: a line longer than %d KiB", ErrBadRow, MaxLine>>10)}
	case markQuote:
		return nil, &RowError{Line: line, Err: fmt.Errorf("%w: a quoted field spans lines (a row is one line)", ErrBadRow)}
	}
	if len(rec) != in.n {
		if in.id < len(rec) {
			row.ID = rec[in.id]
		}
		return nil, &RowError{Line: line, ID: printable(row.ID), Err: fmt.Errorf("%w: %d fields, the header has %d", ErrBadRow, len(rec), in.n)}
	}
	row.ID = rec[in.id]
	bad := func(format string, args ...any) error {
		return &RowError{Line: line, ID: printable(row.ID), Err: fmt.Errorf("%w: "+format, append([]any{ErrBadRow}, args...)...)}
	}
	if err := checkID(row.ID); err != nil {
		return nil, bad("%v", err)
	}
	if in.fields != nil {
		row.Fields = make([]string, len(in.fields))
		for j, c := range in.fields {
			if c >= 0 {
				row.Fields[j] = strings.TrimSpace(rec[c])
			}
		}
		return row, nil
	}
	if row.Data, err = hexField(rec[in.data]); err != nil {
		return nil, bad("data: %v", err)
	}
	if len(row.Data) == 0 {
		return nil, bad("no data")
	}
	if in.iv >= 0 && strings.TrimSpace(rec[in.iv]) != "" {
		if row.IV, err = hexField(rec[in.iv]); err != nil {
			return nil, bad("iv: %v", err)
		}
	}
	return row, nil
}

// HasIV reports whether the input has an iv column.
func (in *Input) HasIV() bool { return in.iv >= 0 }

// checkID refuses ids that cannot name a key or a line of the output: empty
// ones and those with control characters (newlines among them, so that
// every output record is one line).
func checkID(id string) error {
	if id == "" {
		return errors.New("empty id")
	}
	if len(id) > 128 {
		return fmt.Errorf("id of %d bytes (128 at most)", len(id))
	}
	for _, r := range id {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return errors.New("id holds a control character or invalid UTF-8")
		}
	}
	return nil
}

// printable is id as it may appear in a report.
func printable(id string) string {
	if len(id) > 64 {
		id = id[:64] + "…"
	}
	return strings.ToValidUTF8(id, "?")
}

// hexField decodes a hex cell; spaces are ignored.
func hexField(s string) ([]byte, error) {
	if strings.ContainsAny(s, " \t") {
		s = strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, s)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not hex (%s)", strings.TrimPrefix(err.Error(), "encoding/hex: "))
	}
	return b, nil
}
