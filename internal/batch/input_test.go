package batch

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInputHeader(t *testing.T) {
	for _, c := range []struct {
		header, err string
		iv          bool
	}{
		{"id,data", "", false},
		{"data,id", "", false},
		{"\uFEFFID, Data ,IV", "", true}, // a spreadsheet's BOM, case, spaces
		{"id,data,iv", "", true},
		{"id", "required", false},
		{"id,data,ivv", `unknown column "ivv"`, false},
		{"id,data,id", "twice", false},
		{"", "empty", false},
	} {
		in, err := NewInput(strings.NewReader(c.header + "\n"))
		if c.header == "" {
			in, err = NewInput(strings.NewReader(""))
		}
		if c.err != "" {
			require.ErrorContains(t, err, c.err, c.header)
			continue
		}
		require.NoError(t, err, c.header)
		assert.Equal(t, c.iv, in.HasIV(), c.header)
	}
}

func TestInputRows(t *testing.T) {
	src := strings.Join([]string{
		"data,id,iv",
		"00112233,a,",                      // line 2
		"0011 2233,\"b, with comma\",0102", // line 3: spaces in hex, a quoted id
		"zz,c,",                            // line 4: not hex
		"00,d",                             // line 5: a field short
		"00,,",                             // line 6: no id
		"00,\"e\nf\",",                     // lines 7-8: a newline in the id: a row is one line
		",g,",                              // line 9: no data
		"00,h,0x",                          // line 10: bad iv
		"00,\"i\"x,",                       // line 11: a bare quote
		"",                                 // blank lines are skipped
		"0a0b,j,",                          // line 13
	}, "\n")
	in, err := NewInput(strings.NewReader(src))
	require.NoError(t, err)
	type got struct {
		line int
		id   string
		data string
		err  string
	}
	var all []got
	for {
		row, err := in.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			var re *RowError
			require.True(t, errors.As(err, &re), "%v", err)
			require.ErrorIs(t, err, ErrBadRow)
			all = append(all, got{line: re.Line, id: re.ID, err: re.Error()})
			continue
		}
		all = append(all, got{line: row.Line, id: row.ID, data: string(row.Data)})
	}
	require.Len(t, all, 11)
	assert.Equal(t, got{2, "a", "\x00\x11\x22\x33", ""}, all[0])
	assert.Equal(t, got{3, "b, with comma", "\x00\x11\x22\x33", ""}, all[1])
	assert.Equal(t, 4, all[2].line)
	assert.Contains(t, all[2].err, `line 4 (id "c"): bad row: data: not hex`)
	assert.Contains(t, all[3].err, "line 5 (id \"d\"): bad row: 2 fields, the header has 3")
	assert.Contains(t, all[4].err, "line 6: bad row: empty id")
	assert.Contains(t, all[5].err, "line 7: bad row: a quoted field spans lines")
	assert.Contains(t, all[6].err, "line 8: bad row: a quoted field spans lines")
	assert.Contains(t, all[7].err, "line 9 (id \"g\"): bad row: no data")
	assert.Contains(t, all[8].err, "line 10 (id \"h\"): bad row: iv: not hex")
	assert.Contains(t, all[9].err, "line 11: bad row")
	assert.Equal(t, got{13, "j", "\x0a\x0b", ""}, all[10])
}

// TestInputLongLines: a line over MaxLine is a bad row and the next line is
// read as usual; an endless line (64 MiB of zeros, as /dev/zero gives)
// keeps memory flat: the heap in use stays within a few buffers.
func TestInputLongLines(t *testing.T) {
	long := "a," + strings.Repeat("00", MaxLine) + "\n"
	in, err := NewInput(strings.NewReader("id,data\n" + long + "b,00\n"))
	require.NoError(t, err)
	_, err = in.Next()
	require.ErrorIs(t, err, ErrBadRow)
	require.ErrorContains(t, err, "line 2: bad row: a line longer than 64 KiB")
	row, err := in.Next()
	require.NoError(t, err)
	assert.Equal(t, 3, row.Line)
	assert.Equal(t, "b", row.ID)

	const endless = 64 << 20
	src := io.MultiReader(strings.NewReader("id,data\n"), io.LimitReader(zeros{}, endless), strings.NewReader("\nc,01\n"))
	in, err = NewInput(src)
	require.NoError(t, err)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = in.Next()
	require.ErrorContains(t, err, "line 2: bad row: a line longer than 64 KiB")
	runtime.ReadMemStats(&after)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(4*MaxLine), "bytes allocated while dropping 64 MiB of one line")
	row, err = in.Next()
	require.NoError(t, err)
	assert.Equal(t, "c", row.ID)
	assert.Equal(t, 3, row.Line)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestInputIV(t *testing.T) {
	in, err := NewInput(strings.NewReader("id,data,iv\na,00,\nb,00,0102\n"))
	require.NoError(t, err)
	row, err := in.Next()
	require.NoError(t, err)
	assert.Nil(t, row.IV, "an empty iv cell means the function's IV")
	row, err = in.Next()
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2}, row.IV)
}

// failingReader fails after its data.
type failingReader struct{ r io.Reader }

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("disk on fire")
	}
	return n, err
}

func TestInputReadError(t *testing.T) {
	in, err := NewInput(failingReader{strings.NewReader("id,data\na,00\n")})
	require.NoError(t, err)
	_, err = in.Next()
	require.NoError(t, err)
	_, err = in.Next()
	require.ErrorContains(t, err, "disk on fire")
	var re *RowError
	require.False(t, errors.As(err, &re), "a failing input is no bad row")
}
