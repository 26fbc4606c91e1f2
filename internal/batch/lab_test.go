package batch

import (
	"context"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// secretKeys returns the labels of every secret key the token's sessions
// see, and how many keys have each.
func secretKeys(t testing.TB, lt *labtok.Token) map[string]int {
	t.Helper()
	all, err := lt.Tok.Labels(context.Background())
	require.NoError(t, err)
	labels := map[string]int{}
	for _, l := range all {
		labels[l]++
	}
	return labels
}

// count is the number of secret keys.
func count(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
