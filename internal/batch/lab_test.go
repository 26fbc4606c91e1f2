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
// uses, destroyed when the test ends.
func (lt *labToken) importKey(t testing.TB, ckk uint, value []byte, label string, uses ...uint) *derive.Key {
	t.Helper()
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	for _, u := range uses {
		tmpl = append(tmpl, pkcs11.NewAttribute(u, true))
	}
	var h pkcs11.ObjectHandle
	require.NoError(t, lt.tok.WithSession(func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		var err error
		h, err = c.CreateObject(s, tmpl)
		return err
	}))
	t.Cleanup(func() {
		lt.tok.WithSession(func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error { return c.DestroyObject(s, h) })
	})
	k, err := lt.tok.Key(context.Background(), h)
	require.NoError(t, err)
	return k
}

// secretKeys returns the labels of every secret key the token's sessions
// see, and how many keys have each.
func (lt *labToken) secretKeys(t testing.TB) map[string]int {
	t.Helper()
	labels := map[string]int{}
	require.NoError(t, lt.tok.WithSession(func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		if err := c.FindObjectsInit(s, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY)}); err != nil {
			return err
		}
		var hs []pkcs11.ObjectHandle
		for {
			got, _, err := c.FindObjects(s, 256)
			if err != nil {
				c.FindObjectsFinal(s)
				return err
			}
			if len(got) == 0 {
				break
			}
			hs = append(hs, got...)
		}
		if err := c.FindObjectsFinal(s); err != nil {
			return err
		}
		for _, h := range hs {
			a, err := c.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
			if err != nil {
				return err
			}
			labels[string(a[0].Value)]++
		}
		return nil
	}))
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
