package batch

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var testHeader = []string{"id", "wrapped", "kcv", "strategy", "kdf"}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err, "the output must be valid CSV")
	return recs
}

func TestOutputNewAndResume(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	o, err := OpenOutput(path, testHeader)
	require.NoError(t, err)
	assert.Zero(t, o.Resumed)
	_, err = o.Write(&Out{ID: "a,1", Key: "00", KCV: "abcdef", Strategy: "native", KDF: "aes-ecb"})
	require.NoError(t, err)
	_, err = o.Write(&Out{ID: "b", Key: "01", KCV: "abcdef", Strategy: "native", KDF: "aes-ecb"})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "wrapped keys are for the partner only")

	recs := readCSV(t, path)
	require.Len(t, recs, 3)
	assert.Equal(t, testHeader, recs[0])
	assert.Equal(t, "a,1", recs[1][0])

	o, err = OpenOutput(path, testHeader)
	require.NoError(t, err)
	assert.Equal(t, 2, o.Resumed)
	assert.True(t, o.Done("a,1"))
	assert.True(t, o.Done("b"))
	assert.False(t, o.Done("c"))
	_, err = o.Write(&Out{ID: "c", Key: "02", KCV: "abcdef", Strategy: "native", KDF: "aes-ecb"})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	assert.Len(t, readCSV(t, path), 4, "appended, header not repeated")
}

func TestOutputCutsPartialRow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	content := strings.Join(testHeader, ",") + "\na,00,abcdef,native,aes-ecb\nb,01,ab"
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	o, err := OpenOutput(path, testHeader)
	require.NoError(t, err)
	assert.Equal(t, int64(len("b,01,ab")), o.Truncated)
	assert.Equal(t, 1, o.Resumed)
	assert.False(t, o.Done("b"), "a partial row is not done")
	_, err = o.Write(&Out{ID: "b", Key: "01", KCV: "abcdef", Strategy: "native", KDF: "aes-ecb"})
	require.NoError(t, err)
	require.NoError(t, o.Close())
	recs := readCSV(t, path)
	require.Len(t, recs, 3)
	assert.Equal(t, []string{"b", "01", "abcdef", "native", "aes-ecb"}, recs[2])

	// A partial header only (a run killed writing it): the file starts afresh.
	require.NoError(t, os.WriteFile(path, []byte("id,wra"), 0o600))
	o, err = OpenOutput(path, testHeader)
	require.NoError(t, err)
	require.NoError(t, o.Close())
	assert.Equal(t, [][]string{testHeader}, readCSV(t, path))
}

func TestOutputRefusals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.csv")
	require.NoError(t, os.WriteFile(path, []byte("id,label,kcv,strategy,kdf\n"), 0o600))
	_, err := OpenOutput(path, testHeader)
	require.ErrorContains(t, err, "not an output of this kind of p11derive batch run; it was left as it was")

	require.NoError(t, os.WriteFile(path, []byte(strings.Join(testHeader, ",")+"\na,b\n"), 0o600))
	_, err = OpenOutput(path, testHeader)
	require.ErrorContains(t, err, "wrong number of fields")

	path = filepath.Join(dir, "locked.csv")
	o, err := OpenOutput(path, testHeader)
	require.NoError(t, err)
	_, err = OpenOutput(path, testHeader)
	require.ErrorContains(t, err, "another run is writing it")
	require.NoError(t, o.Close())
	o, err = OpenOutput(path, testHeader)
	require.NoError(t, err, "the lock goes with Close")
	require.NoError(t, o.Close())

	_, err = OpenOutput(dir, testHeader)
	require.Error(t, err)
}

func TestOutputWritesWholeRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.csv")
	o, err := OpenOutput(path, testHeader)
	require.NoError(t, err)
	long := strings.Repeat("ab", 1000)
	for i := range 200 { // past flushAt: some rows are written before Close
		_, err = o.Write(&Out{ID: strings.Repeat("x", i+1), Key: long, KCV: "abcdef", Strategy: "s", KDF: "k"})
		require.NoError(t, err)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		require.True(t, len(b) == 0 || b[len(b)-1] == '\n', "the file ends on a whole row")
	}
	require.NoError(t, o.Close())
	assert.Len(t, readCSV(t, path), 201)
}
