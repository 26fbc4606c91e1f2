package derive

import (
	"context"
	"crypto/rand"
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

// tokens returns the lab tokens, opened once per test binary: SoftHSM2,
// NSS softoken's crypto slot (session objects, no login) and its key
// database slot (token objects; it lists no *_ENCRYPT_DATA mechanism but
// runs them).
func tokens(t testing.TB) []*labToken {
	t.Helper()
	labMu.Lock()
	defer labMu.Unlock()
	if labToks != nil {
		return labToks
	}
	var toks []*labToken
	for _, lt := range []struct {
		kind string
		tok  *lab.Token
	}{{"softhsm2", lab.SharedSoftHSM2(t)}, {"nss", lab.NSS(t)}, {"nssdb", lab.NSSDB(t)}} {
		cfg := Config{Module: lt.tok.Module, InitArgs: lt.tok.InitArgs, Slot: &lt.tok.SlotID}
		if lt.tok.Login {
			cfg.PIN = lt.tok.PIN
		}
		tok, err := Open(cfg)
		require.NoError(t, err, lt.kind)
		toks = append(toks, &labToken{kind: lt.kind, lab: lt.tok, tok: tok})
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

// importKey creates a session secret key of known value, as a test's base
// key. Attributes in extra override the defaults.
func (lt *labToken) importKey(t testing.TB, ckk uint, value []byte, extra ...*pkcs11.Attribute) *Key {
	t.Helper()
	set := map[uint]*pkcs11.Attribute{}
	order := []uint{}
	add := func(a *pkcs11.Attribute) {
		if _, ok := set[a.Type]; !ok {
			order = append(order, a.Type)
		}
		set[a.Type] = a
	}
	for _, a := range []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
	} {
		add(a)
	}
	for _, a := range extra {
		add(a)
	}
	tmpl := make([]*pkcs11.Attribute, 0, len(order))
	for _, typ := range order {
		tmpl = append(tmpl, set[typ])
	}
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

// objects counts the objects the token's sessions can see.
func (lt *labToken) objects(t *testing.T) int {
	t.Helper()
	var n int
	require.NoError(t, withSession(lt.tok, func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		if err := ctx.FindObjectsInit(s, nil); err != nil {
			return err
		}
		defer ctx.FindObjectsFinal(s)
		for {
			hs, _, err := ctx.FindObjects(s, 100)
			if err != nil {
				return err
			}
			if len(hs) == 0 {
				return nil
			}
			n += len(hs)
		}
	}))
	return n
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
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
