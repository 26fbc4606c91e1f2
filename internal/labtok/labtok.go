// Package labtok is the test rig that opens the lab tokens (package lab)
// through derive.Open, for the tests of every package: SoftHSM2 (shared
// by the test binary, or fresh), NSS softoken's crypto slot (session
// objects, no login) and its key database slot (token objects; it lists no
// *_ENCRYPT_DATA mechanism but runs them). It imports keys of known value,
// counts objects and computes check values and MACs in the token.
//
// The tests' own PKCS#11 calls (keys with any attributes, MACs, object
// counts) go through a session of package lab on the same module: SoftHSM2
// and NSS softoken give every caller the same function list, so its
// objects and the Token's are one set.
//
// A test package using it needs
//
//	func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }
//
// (or lab.MainExamples).
package labtok

import (
	"context"
	"encoding/hex"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

// The kinds of shared lab token (lab.SharedNames).
const (
	SoftHSM2 = lab.SharedSoftHSM2Name // lab.SharedSoftHSM2
	NSS      = lab.NSSName            // lab.NSS: the crypto slot
	NSSDB    = lab.NSSDBName          // lab.NSSDB: the key database slot
)

// Kinds lists every kind of shared lab token.
var Kinds = lab.SharedNames

// Token is a lab token opened with derive.Open.
type Token struct {
	Kind string // SoftHSM2, NSS or NSSDB (or what Open was given)
	Lab  *lab.Token
	Tok  *derive.Token
}

// Config is the derive.Config that opens l: its module, C_Initialize
// arguments, slot and PIN.
func Config(l *lab.Token) derive.Config {
	cfg := derive.Config{Module: l.Module, InitArgs: l.InitArgs, Slot: &l.SlotID}
	if l.Login {
		cfg.PIN = l.PIN
	}
	return cfg
}

// New opens l with derive.Open, for a Token the caller keeps for the test
// binary (a process can initialise each module once): it is never closed.
func New(t testing.TB, kind string, l *lab.Token) *Token {
	t.Helper()
	tok, err := derive.Open(Config(l))
	require.NoError(t, err, kind)
	return &Token{Kind: kind, Lab: l, Tok: tok}
}

// Open is New, the Token closed when the test ends.
func Open(t testing.TB, kind string, l *lab.Token) *Token {
	t.Helper()
	lt := New(t, kind, l)
	t.Cleanup(func() { lt.Tok.Close() })
	return lt
}

// Fresh opens a fresh SoftHSM2 token (lab.SoftHSM2), its environment set
// for code under test that initialises the module itself.
func Fresh(t testing.TB, opts ...lab.Option) *Token {
	t.Helper()
	l := lab.SoftHSM2(t, opts...)
	l.Setenv(t)
	return Open(t, SoftHSM2, l)
}

var (
	mu     sync.Mutex
	shared = map[string]*Token{}
)

// Shared returns the lab token of the kind, opened once per test binary (a
// process can initialise each module once) and never closed.
func Shared(t testing.TB, kind string) *Token {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if lt := shared[kind]; lt != nil {
		return lt
	}
	shared[kind] = New(t, kind, lab.Shared(t, kind))
	return shared[kind]
}

// All returns the shared lab tokens of every kind.
func All(t testing.TB) []*Token {
	t.Helper()
	out := make([]*Token, len(Kinds))
	for i, k := range Kinds {
		out[i] = Shared(t, k)
	}
	return out
}

// ForEach runs f as a subtest on the shared lab token of each kind.
func ForEach(t *testing.T, f func(t *testing.T, lt *Token)) { ForKinds(t, Kinds, f) }

// ForKinds runs f as a subtest on the shared lab token of each of kinds.
func ForKinds(t *testing.T, kinds []string, f func(t *testing.T, lt *Token)) {
	for _, k := range kinds {
		t.Run(k, func(t *testing.T) { f(t, Shared(t, k)) })
	}
}

// Create makes a session secret key of type ckk and known value, of the
// template CKA_CLASS, CKA_KEY_TYPE, CKA_TOKEN false, CKA_VALUE followed by
// attrs (a later attribute of a type replaces an earlier one, in its
// place). It is destroyed when the test ends.
func (lt *Token) Create(t testing.TB, ckk uint, value []byte, attrs ...*pkcs11.Attribute) *derive.Key {
	t.Helper()
	ctx, s := lab.Open(t, lt.Lab)
	h := lab.CreateSecretKey(t, ctx, s, ckk, value, attrs...)
	t.Cleanup(func() { ctx.DestroyObject(s, h) })
	k, err := lt.Tok.Key(context.Background(), h)
	require.NoError(t, err)
	return k
}

// Import makes a key of known value with Token.Import, destroyed when the
// test ends.
func (lt *Token) Import(t testing.TB, spec derive.KeySpec, value []byte) *derive.Key {
	t.Helper()
	k, err := lt.Tok.Import(context.Background(), spec, value)
	require.NoError(t, err)
	t.Cleanup(func() { lt.Tok.Destroy(context.Background(), k) })
	return k
}

// ImportUses is Import of a session key of type ckk, labelled label, with
// usage u.
func (lt *Token) ImportUses(t testing.TB, ckk uint, value []byte, label string, u derive.Usage) *derive.Key {
	t.Helper()
	kt, err := derive.ParseKeyType(derive.KeyTypeName(ckk), len(value))
	require.NoError(t, err)
	return lt.Import(t, derive.KeySpec{Label: label, Type: kt, Usage: u}, value)
}

// Objects counts the objects the token's sessions see.
func (lt *Token) Objects(t testing.TB) int {
	t.Helper()
	return lab.Objects(t, lt.Lab)
}

// KCV is k's check value computed in the token (k needs CKA_ENCRYPT), in
// hex.
func (lt *Token) KCV(t testing.TB, k *derive.Key) string {
	t.Helper()
	kcv, err := lt.Tok.CheckValue(context.Background(), k)
	require.NoError(t, err)
	return hex.EncodeToString(kcv)
}

// Sign computes a MAC with k in the token (k needs CKA_SIGN).
func (lt *Token) Sign(t testing.TB, k *derive.Key, mech uint, msg []byte) []byte {
	t.Helper()
	ctx, s := lab.Open(t, lt.Lab)
	require.NoError(t, ctx.SignInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, k.Handle))
	out, err := ctx.Sign(s, msg)
	require.NoError(t, err)
	return out
}

// Encrypt encrypts msg with k in the token (k needs CKA_ENCRYPT), for
// check values of other conventions (GlobalPlatform's AES KCV encrypts a
// block of '01' bytes).
func (lt *Token) Encrypt(t testing.TB, k *derive.Key, mech uint, msg []byte) []byte {
	t.Helper()
	ctx, s := lab.Open(t, lt.Lab)
	require.NoError(t, ctx.EncryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, k.Handle))
	out, err := ctx.Encrypt(s, msg)
	require.NoError(t, err)
	return out
}

// Base is Create of a base key for the schemes: CKA_DERIVE true, then
// extra.
func (lt *Token) Base(t testing.TB, ckk uint, value []byte, extra ...*pkcs11.Attribute) *derive.Key {
	t.Helper()
	return lt.Create(t, ckk, value, append([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true)}, extra...)...)
}

// Known is Create of a key for every test's use (lab.KnownUses:
// CKA_DERIVE, CKA_ENCRYPT, CKA_SIGN and CKA_UNWRAP true), then extra.
func (lt *Token) Known(t testing.TB, ckk uint, value []byte, extra ...*pkcs11.Attribute) *derive.Key {
	t.Helper()
	return lt.Create(t, ckk, value, append(lab.KnownUses(), extra...)...)
}
