// Package schemetest is the test harness of the scheme packages (emv, gp,
// an10922, dukpt, tr31): the lab tokens opened through the public API,
// imported base keys of published value, and check values computed in the
// token and in software.
//
// The tests' own PKCS#11 calls (keys with any attributes, MACs, object
// counts) go through a session of package lab on the same module: SoftHSM2
// and NSS softoken give every caller the same function list, so its
// objects and the Token's are one set.
//
// A test package using it needs
//
//	func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }
package schemetest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"encoding/hex"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

// Token is a lab token opened with derive.Open.
type Token struct {
	Kind string // "softhsm2", "nss" (crypto slot) or "nssdb" (key database slot)
	Lab  *lab.Token
	Tok  *derive.Token
}

var (
	mu   sync.Mutex
	toks []*Token
)

// Tokens returns the lab tokens, opened once per test binary: SoftHSM2,
// NSS softoken's crypto slot and its key database slot.
func Tokens(t testing.TB) []*Token {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if toks != nil {
		return toks
	}
	var out []*Token
	for _, lt := range []struct {
		kind string
		tok  *lab.Token
	}{{"softhsm2", lab.SharedSoftHSM2(t)}, {"nss", lab.NSS(t)}, {"nssdb", lab.NSSDB(t)}} {
		cfg := derive.Config{Module: lt.tok.Module, InitArgs: lt.tok.InitArgs, Slot: &lt.tok.SlotID}
		if lt.tok.Login {
			cfg.PIN = lt.tok.PIN
		}
		tok, err := derive.Open(cfg)
		require.NoError(t, err, lt.kind)
		out = append(out, &Token{Kind: lt.kind, Lab: lt.tok, Tok: tok})
	}
	toks = out
	return toks
}

// ForEach runs f as a subtest on each lab token.
func ForEach(t *testing.T, f func(t *testing.T, lt *Token)) {
	for _, lt := range Tokens(t) {
		t.Run(lt.Kind, func(t *testing.T) { f(t, lt) })
	}
}

// Import creates a session secret key of a published value as a base key:
// CKA_DERIVE only (what the schemes need), unless extra says otherwise.
// It is destroyed when the test ends.
func (lt *Token) Import(t testing.TB, ckk uint, value []byte, extra ...*pkcs11.Attribute) *derive.Key {
	t.Helper()
	set := map[uint]*pkcs11.Attribute{}
	var order []uint
	for _, a := range append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
	}, extra...) {
		if _, ok := set[a.Type]; !ok {
			order = append(order, a.Type)
		}
		set[a.Type] = a
	}
	tmpl := make([]*pkcs11.Attribute, len(order))
	for i, typ := range order {
		tmpl[i] = set[typ]
	}
	ctx, s := lab.Open(t, lt.Lab)
	h, err := ctx.CreateObject(s, tmpl)
	require.NoError(t, err)
	t.Cleanup(func() { ctx.DestroyObject(s, h) })
	k, err := lt.Tok.Key(context.Background(), h)
	require.NoError(t, err)
	return k
}

// Objects counts the objects the token's sessions see.
func (lt *Token) Objects(t testing.TB) int {
	t.Helper()
	ctx, s := lab.Open(t, lt.Lab)
	return lab.CountObjects(t, ctx, s)
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

// RefKCV is the check value, in hex, of a key of type ckk (CKK_AES,
// CKK_DES2, CKK_DES3) and value v, computed in software: the first 3
// bytes of E_v(0^n).
func RefKCV(t testing.TB, ckk uint, v []byte) string {
	t.Helper()
	b := Block(t, ckk, v)
	out := make([]byte, b.BlockSize())
	b.Encrypt(out, make([]byte, b.BlockSize()))
	return hex.EncodeToString(out[:3])
}

// Block is the software cipher of a key of type ckk and value v.
func Block(t testing.TB, ckk uint, v []byte) cipher.Block {
	t.Helper()
	var b cipher.Block
	var err error
	switch ckk {
	case pkcs11.CKK_AES:
		b, err = aes.NewCipher(v)
	case pkcs11.CKK_DES2:
		b, err = des.NewTripleDESCipher(append(append([]byte{}, v...), v[:8]...))
	case pkcs11.CKK_DES3:
		b, err = des.NewTripleDESCipher(v)
	default:
		t.Fatalf("no software cipher for key type %#x", ckk)
	}
	require.NoError(t, err)
	return b
}

// ECB encrypts whole blocks in software.
func ECB(b cipher.Block, data []byte) []byte {
	out := make([]byte, len(data))
	for i := 0; i < len(data); i += b.BlockSize() {
		b.Encrypt(out[i:], data[i:i+b.BlockSize()])
	}
	return out
}

// CMAC is CMAC (NIST SP 800-38B) over b, in software, for the test
// references; anchored by TestCMACAnchors to RFC 4493 and SP 800-38B.
func CMAC(b cipher.Block, msg []byte) []byte {
	n := b.BlockSize()
	rb := byte(0x87)
	if n == 8 {
		rb = 0x1b
	}
	dbl := func(in []byte) []byte {
		out := make([]byte, n)
		for i := 0; i < n; i++ {
			out[i] = in[i] << 1
			if i+1 < n {
				out[i] |= in[i+1] >> 7
			}
		}
		if in[0]&0x80 != 0 {
			out[n-1] ^= rb
		}
		return out
	}
	l := make([]byte, n)
	b.Encrypt(l, l)
	k1 := dbl(l)
	k2 := dbl(k1)
	blocks := (len(msg) + n - 1) / n
	last := make([]byte, n)
	if blocks > 0 && len(msg)%n == 0 {
		copy(last, msg[(blocks-1)*n:])
		for i := range last {
			last[i] ^= k1[i]
		}
	} else {
		if blocks == 0 {
			blocks = 1
		}
		rest := msg[(blocks-1)*n:]
		copy(last, rest)
		last[len(rest)] = 0x80
		for i := range last {
			last[i] ^= k2[i]
		}
	}
	x := make([]byte, n)
	for i := 0; i < blocks-1; i++ {
		for j := 0; j < n; j++ {
			x[j] ^= msg[i*n+j]
		}
		b.Encrypt(x, x)
	}
	for j := range x {
		x[j] ^= last[j]
	}
	b.Encrypt(x, x)
	return x
}

// Unhex decodes hex, ignoring spaces; it panics on bad input (test data).
func Unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}
