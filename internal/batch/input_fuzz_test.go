package batch

import (
	"bytes"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzInput reads arbitrary bytes as a batch input CSV: no panic, no
// endless loop, every row it returns is one a key can be made of (an id
// without control characters, data), every bad row is a *RowError matching
// ErrBadRow with a printable id, lines go forward, and the good rows,
// written out again as CSV, read back the same.
func FuzzInput(f *testing.F) {
	for _, s := range []string{
		"id,data\nd1,00112233\nd2,4455\n",
		"\uFEFFID, Data ,IV\nx,00 11,0001020304050607\ny,22,\n",
		"data,id\n00,a\nzz,b\n,c\n00,\n\"multi\nline\",00\n",
		"id,data,iv\na,00,1\nb,00\nc,00,00,00\n",
		"id,data\n\"a\"b,00\n\"unterminated,00\n",
		"id,data\n" + strings.Repeat("x", 200) + ",00\n\x01,00\n\xff,00\n",
		"id\n", "", "id,data,ivv\n", "id,data,id\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := NewInput(bytes.NewReader(b))
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		var good []*Row
		last := 1
		for i := 0; ; i++ {
			if i > len(b)+1 {
				t.Fatalf("more than %d rows out of %d bytes", i, len(b))
			}
			row, err := in.Next()
			if err == io.EOF {
				break
			}
			var re *RowError
			if errors.As(err, &re) {
				if !errors.Is(err, ErrBadRow) {
					t.Fatalf("a row error that is not ErrBadRow: %v", err)
				}
				if !utf8.ValidString(re.ID) || len(re.ID) > 64+len("…") {
					t.Fatalf("row error id %q", re.ID)
				}
				if re.Line < last {
					t.Fatalf("line %d after line %d", re.Line, last)
				}
				last = re.Line
				continue
			}
			if err != nil {
				t.Fatalf("reading from memory failed: %v", err)
			}
			if row.Line <= last {
				t.Fatalf("row on line %d after line %d", row.Line, last)
			}
			last = row.Line
			if err := checkID(row.ID); err != nil {
				t.Fatalf("row %+v: %v", row, err)
			}
			if len(row.Data) == 0 {
				t.Fatalf("row %+v without data", row)
			}
			if row.IV != nil && !in.HasIV() {
				t.Fatalf("an iv without an iv column: %+v", row)
			}
			good = append(good, row)
		}

		// The good rows, written out canonically, read back the same.
		var out bytes.Buffer
		w := csv.NewWriter(&out)
		w.Write([]string{ColID, ColData, ColIV})
		for _, r := range good {
			w.Write([]string{r.ID, hex.EncodeToString(r.Data), hex.EncodeToString(r.IV)})
		}
		w.Flush()
		again, err := NewInput(&out)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range good {
			got, err := again.Next()
			if err != nil {
				t.Fatalf("row %+v written out does not read back: %v", want, err)
			}
			if got.ID != want.ID || !bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.IV, want.IV) {
				t.Fatalf("row %+v read back as %+v", want, got)
			}
		}
		if _, err := again.Next(); err != io.EOF {
			t.Fatalf("more rows than written: %v", err)
		}
	})
}
