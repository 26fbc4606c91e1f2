package derive

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// The examples (example_test.go) read their token, made by MainExamples,
// from the environment.
func TestMain(m *testing.M) { os.Exit(lab.MainExamples(m, lab.InitNow)) }

// labToken is a lab token opened with derive.Open, shared by the tests of
// this package (a process can initialise each module once).
type labToken struct {
	kind string
	lab  *lab.Token
	tok  *Token
}

var (
	labMu   sync.Mutex
	labToks []*labToken
)

// tokens returns the shared lab tokens (lab.SharedNames: SoftHSM2, NSS
// softoken's crypto slot and its key database slot), opened once per test
// binary. Package labtok does the same for the other packages' tests; it
// cannot serve this package's own (it imports derive), so only the opening
// is here (and the tests' raw calls in the Token's own sessions,
// withSession): the tokens, key templates, object counts and random values
// are package lab's, shared by every package.
func tokens(t testing.TB) []*labToken {
	t.Helper()
	labMu.Lock()
	defer labMu.Unlock()
	if labToks != nil {
		return labToks
	}
	var toks []*labToken
	for _, name := range lab.SharedNames {
		l := lab.Shared(t, name)
		cfg := Config{Module: l.Module, InitArgs: l.InitArgs, Slot: &l.SlotID}
		if l.Login {
			cfg.PIN = l.PIN
		}
		tok, err := Open(cfg)
		require.NoError(t, err, name)
		toks = append(toks, &labToken{kind: name, lab: l, tok: tok})
	}
	labToks = toks
	return labToks
}

// forEachToken runs f as a subtest on each lab token.
func forEachToken(t *testing.T, f func(t *testing.T, lt *labToken)) {
	for _, lt := range tokens(t) {
		t.Run(lt.kind, func(t *testing.T) { f(t, lt) })
	}
}

// importKey creates a session secret key of known value with lab.KnownUses,
// as a test's base key, destroyed when the test ends. Attributes in extra
// override the defaults. It is made in a session of the Token's pool, so
// that a test of a bounded pool sees no session but the Token's.
func (lt *labToken) importKey(t testing.TB, ckk uint, value []byte, extra ...*pkcs11.Attribute) *Key {
	t.Helper()
	tmpl := lab.SecretKeyTemplate(ckk, value, append(lab.KnownUses(), extra...)...)
	var h pkcs11.ObjectHandle
	require.NoError(t, withSession(lt.tok, func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		var err error
		h, err = ctx.CreateObject(s, tmpl)
		return err
	}))
	t.Cleanup(func() {
		withSession(lt.tok, func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error { return ctx.DestroyObject(s, h) })
	})
	k, err := lt.tok.Key(context.Background(), h)
	require.NoError(t, err)
	return k
}

// objects counts the objects the token's sessions can see (in a session of
// the Token's pool, as importKey).
func (lt *labToken) objects(t testing.TB) int {
	t.Helper()
	var n int
	require.NoError(t, withSession(lt.tok, func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		n = lab.CountObjects(t, ctx, s)
		return nil
	}))
	return n
}

// The PKCS#11 calls of the steps counted by the tests: reading DK's
// attributes back is one C_GetAttributeValue (sizes known); an Init and
// one-shot pair (C_SignInit + C_Sign) is two.
const (
	readBack = 1
	twoStep  = 2
)

// testCtxs holds, per module path, a miekg/pkcs11 context for the tests'
// own PKCS#11 calls (making keys of known value, counting objects, closing
// sessions behind the Token's back). The API has no raw session; tests
// borrow the pool's. SoftHSM2 and NSS softoken hand every C_GetFunctionList
// the same list, so miekg's calls reach the same sessions as the Token's
// (p11-kit's modules do not: tests through them use the API only).
var testCtxs sync.Map

func testCtx(t *Token) *pkcs11.Ctx {
	if c, ok := testCtxs.Load(t.mod.path); ok {
		return c.(*pkcs11.Ctx)
	}
	c := pkcs11.New(t.mod.path)
	if c == nil {
		panic("cannot load " + t.mod.path)
	}
	c.Initialize() // CKR_CRYPTOKI_ALREADY_INITIALIZED: the Token did
	got, _ := testCtxs.LoadOrStore(t.mod.path, c)
	return got.(*pkcs11.Ctx)
}

// withSession runs fn with a session of t's pool, as the Token's own
// operations do (a lost session is noted and dropped).
func withSession(t *Token, fn func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error) error {
	s, err := t.session()
	if err != nil {
		return err
	}
	defer t.release(s)
	err = fn(testCtx(t), s.h)
	s.note(err)
	return err
}
