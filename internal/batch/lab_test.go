package batch

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

// labToken is a lab token opened with derive.Open, shared by the tests.
type labToken struct {
	kind string
	lab  *lab.Token
	tok  *derive.Token
}

var (
	labMu   sync.Mutex
	labToks map[string]*labToken
)

// token opens a lab token once per test binary: "softhsm2" (shared),
// "nss" (the crypto slot: session objects only) or "nssdb" (the key
// database slot: token objects too).
func token(t testing.TB, kind string) *labToken {
	t.Helper()
	labMu.Lock()
	defer labMu.Unlock()
	if lt := labToks[kind]; lt != nil {
		return lt
	}
	var l *lab.Token
	switch kind {
	case "softhsm2":
		l = lab.SharedSoftHSM2(t)
	case "nss":
		l = lab.NSS(t)
	case "nssdb":
		l = lab.NSSDB(t)
	}
	cfg := derive.Config{Module: l.Module, InitArgs: l.InitArgs, Slot: &l.SlotID}
	if l.Login {
		cfg.PIN = l.PIN
	}
	tok, err := derive.Open(cfg)
	require.NoError(t, err, kind)
	if labToks == nil {
		labToks = map[string]*labToken{}
	}
	labToks[kind] = &labToken{kind: kind, lab: l, tok: tok}
	return labToks[kind]
}

// forEach runs f on each of the token kinds.
func forEach(t *testing.T, kinds []string, f func(t *testing.T, lt *labToken)) {
	for _, k := range kinds {
		t.Run(k, func(t *testing.T) { f(t, token(t, k)) })
	}
}

var allKinds = []string{"softhsm2", "nss", "nssdb"}

// importKey creates a session secret key of known value with the given
// uses (CKA_DERIVE, CKA_WRAP…), destroyed when the test ends.
func (lt *labToken) importKey(t testing.TB, ckk uint, value []byte, label string, uses ...uint) *derive.Key {
	t.Helper()
	kt, err := derive.ParseKeyType(derive.KeyTypeName(ckk), len(value))
	require.NoError(t, err)
	k, err := lt.tok.Import(context.Background(), derive.KeySpec{Label: label, Type: kt, Usage: usage(t, uses...)}, value)
	require.NoError(t, err)
	t.Cleanup(func() { lt.tok.Destroy(context.Background(), k) })
	return k
}

// usage is the Usage of CKA_ attributes.
func usage(t testing.TB, uses ...uint) derive.Usage {
	var u derive.Usage
	for _, cka := range uses {
		switch cka {
		case pkcs11.CKA_ENCRYPT:
			u |= derive.UseEncrypt
		case pkcs11.CKA_DECRYPT:
			u |= derive.UseDecrypt
		case pkcs11.CKA_SIGN:
			u |= derive.UseSign
		case pkcs11.CKA_VERIFY:
			u |= derive.UseVerify
		case pkcs11.CKA_WRAP:
			u |= derive.UseWrap
		case pkcs11.CKA_UNWRAP:
			u |= derive.UseUnwrap
		case pkcs11.CKA_DERIVE:
			u |= derive.UseDerive
		default:
			t.Fatalf("no usage for attribute %#x", cka)
		}
	}
	return u
}

// secretKeys returns the labels of every secret key the token's sessions
// see, and how many keys have each.
func (lt *labToken) secretKeys(t testing.TB) map[string]int {
	t.Helper()
	all, err := lt.tok.Labels(context.Background())
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
