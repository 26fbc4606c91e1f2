package lab

/*
#include <stdlib.h>
*/
import "C"

import (
	"crypto/aes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// module is a PKCS#11 module loaded by Open, shared by every Open of it.
type module struct {
	path     string
	ctx      *pkcs11.Ctx
	initArgs string
	cArgs    *C.char // C copy of initArgs, freed after C_Finalize
	refs     int     // sessions Open made that are still open
	keep     bool    // stays initialised until Main's cleanup (shared tokens)
}

// modules maps Module paths to loaded modules. Its lock also serialises the
// environment changes around C_Initialize.
var modules = struct {
	sync.Mutex
	m map[string]*module
}{m: map[string]*module{}}

// Open initialises tok's module (CKR_CRYPTOKI_ALREADY_INITIALIZED is fine),
// checks that tok.SlotID holds a token labelled tok.Label, opens a read/write
// session there and, if tok.Login, logs the user in
// (CKR_USER_ALREADY_LOGGED_IN is fine). The session is closed when the test
// ends. The module is finalised and unloaded when the last session Open made
// on it is closed, or, for shared tokens (NSS, NSSDB, SharedSoftHSM2), when
// Main returns.
func Open(tb testing.TB, tok *Token) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	tb.Helper()
	mod, err := acquire(tok)
	if err != nil {
		tb.Fatalf("lab: open %s module %s: %v", tok.Kind, tok.Module, err)
	}
	tb.Cleanup(func() { release(mod) })
	ctx := mod.ctx

	info, err := ctx.GetTokenInfo(tok.SlotID)
	if err != nil {
		tb.Fatalf("lab: C_GetTokenInfo(slot %d) of %s: %v", tok.SlotID, tok.Module, err)
	}
	if info.Label != tok.Label {
		tb.Fatalf("lab: slot %d of %s holds token %q, want %q (was the module initialised with another configuration?)", tok.SlotID, tok.Module, info.Label, tok.Label)
	}
	sess, err := ctx.OpenSession(tok.SlotID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		tb.Fatalf("lab: C_OpenSession(slot %d) of %s: %v", tok.SlotID, tok.Module, err)
	}
	tb.Cleanup(func() {
		err := ctx.CloseSession(sess)
		if err != nil && !isCKR(err, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
			tb.Errorf("lab: C_CloseSession: %v", err)
		}
	})
	if tok.Login {
		if err := ctx.Login(sess, pkcs11.CKU_USER, tok.PIN); err != nil && !isCKR(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
			tb.Fatalf("lab: C_Login(CKU_USER) on slot %d of %s: %v", tok.SlotID, tok.Module, err)
		}
	}
	return ctx, sess
}

// acquire loads and initialises tok.Module, or takes the one already loaded.
func acquire(tok *Token) (*module, error) {
	modules.Lock()
	defer modules.Unlock()
	// The environment is set around C_GetFunctionList (pkcs11.New) too:
	// p11-kit-client.so reads P11_KIT_SERVER_ADDRESS there.
	restore := setenv(tok.Env)
	defer restore()
	mod := modules.m[tok.Module]
	if mod == nil {
		ctx := pkcs11.New(tok.Module)
		if ctx == nil {
			return nil, errors.New("cannot load the module")
		}
		mod = &module{path: tok.Module, ctx: ctx, initArgs: tok.InitArgs, keep: tok.shared}
		if tok.InitArgs != "" {
			mod.cArgs = C.CString(tok.InitArgs)
		}
		modules.m[tok.Module] = mod
	} else if mod.initArgs != tok.InitArgs {
		return nil, fmt.Errorf("already loaded with other init args %q", mod.initArgs)
	}
	// Initialise every time: code under test may have finalised the module.
	var opts []pkcs11.InitializeOption
	if mod.cArgs != nil {
		opts = append(opts, pkcs11.InitializeWithReserved(unsafe.Pointer(mod.cArgs)))
	}
	err := mod.ctx.Initialize(opts...)
	if err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		if mod.refs == 0 {
			unload(mod)
		}
		return nil, fmt.Errorf("C_Initialize: %w", err)
	}
	mod.refs++
	return mod, nil
}

func release(mod *module) {
	modules.Lock()
	defer modules.Unlock()
	mod.refs--
	if mod.refs == 0 && !mod.keep {
		unload(mod)
	}
}

// unload finalises and unloads mod; the caller holds the modules lock.
func unload(mod *module) {
	if err := mod.ctx.Finalize(); err != nil && !isCKR(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		fmt.Fprintf(os.Stderr, "lab: C_Finalize of %s: %v\n", mod.path, err)
	}
	mod.ctx.Destroy()
	if mod.cArgs != nil {
		C.free(unsafe.Pointer(mod.cArgs))
		mod.cArgs = nil
	}
	delete(modules.m, mod.path)
}

// finalizeAll unloads every module still loaded (Main's cleanup).
func finalizeAll() {
	modules.Lock()
	defer modules.Unlock()
	for _, mod := range modules.m {
		unload(mod)
	}
}

// setenv sets the "KEY=VALUE" entries of env and returns a function that
// restores the previous environment.
func setenv(env []string) (restore func()) {
	type old struct {
		key, value string
		ok         bool
	}
	var olds []old
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		prev, ok := os.LookupEnv(k)
		olds = append(olds, old{k, prev, ok})
		os.Setenv(k, v)
	}
	return func() {
		for i := len(olds) - 1; i >= 0; i-- {
			if o := olds[i]; o.ok {
				os.Setenv(o.key, o.value)
			} else {
				os.Unsetenv(o.key)
			}
		}
	}
}

// isCKR reports whether err is one of the PKCS#11 return values codes.
func isCKR(err error, codes ...uint) bool {
	for _, c := range codes {
		if errors.Is(err, pkcs11.Error(c)) {
			return true
		}
	}
	return false
}

// SecretKeyTemplate is the template of a session secret key of type
// keyType and value: CKA_CLASS CKO_SECRET_KEY, CKA_KEY_TYPE, CKA_TOKEN
// false, CKA_VALUE, then attrs, an attribute replacing in its place any
// earlier one of the same type (CKA_TOKEN true for a token object, say).
func SecretKeyTemplate(keyType uint, value []byte, attrs ...*pkcs11.Attribute) []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
	}
next:
	for _, a := range attrs {
		for i, t := range tmpl {
			if t.Type == a.Type {
				tmpl[i] = a
				continue next
			}
		}
		tmpl = append(tmpl, a)
	}
	return tmpl
}

// KnownUses are the usages of ImportSecretKey's keys, a key every
// strategy's test can use: CKA_DERIVE, CKA_ENCRYPT, CKA_SIGN, CKA_UNWRAP.
func KnownUses() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
	}
}

// CreateSecretKey creates the key of SecretKeyTemplate(keyType, value,
// attrs...) in the session.
func CreateSecretKey(tb testing.TB, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, keyType uint, value []byte, attrs ...*pkcs11.Attribute) pkcs11.ObjectHandle {
	tb.Helper()
	h, err := ctx.CreateObject(sess, SecretKeyTemplate(keyType, value, attrs...))
	if err != nil {
		// Never print the key value.
		tb.Fatalf("lab: C_CreateObject of a secret key (key type %#x, %d bytes): %v", keyType, len(value), err)
	}
	return h
}

// ImportSecretKey creates a session secret key of type keyType with
// CKA_VALUE value and CKA_LABEL label, with KnownUses. attrs are added to
// the template, replacing any attribute of the same type (e.g. CKA_TOKEN
// true for a token object, CKA_DERIVE false).
func ImportSecretKey(tb testing.TB, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, keyType uint, value []byte, label string, attrs ...*pkcs11.Attribute) pkcs11.ObjectHandle {
	tb.Helper()
	uses := append([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}, KnownUses()...)
	return CreateSecretKey(tb, ctx, sess, keyType, value, append(uses, attrs...)...)
}

// Objects counts the objects l's sessions see, through a session of its
// own (CountObjects).
func Objects(tb testing.TB, l *Token) int {
	tb.Helper()
	ctx, s := Open(tb, l)
	return CountObjects(tb, ctx, s)
}

// CountObjects returns the number of objects the session sees: C_FindObjects
// with an empty template, so session and token objects, private ones too when
// logged in.
func CountObjects(tb testing.TB, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle) int {
	tb.Helper()
	if err := ctx.FindObjectsInit(sess, nil); err != nil {
		tb.Fatalf("lab: C_FindObjectsInit: %v", err)
	}
	n := 0
	for {
		objs, _, err := ctx.FindObjects(sess, 256)
		if err != nil {
			ctx.FindObjectsFinal(sess)
			tb.Fatalf("lab: C_FindObjects: %v", err)
		}
		if len(objs) == 0 {
			break
		}
		n += len(objs)
	}
	if err := ctx.FindObjectsFinal(sess); err != nil {
		tb.Fatalf("lab: C_FindObjectsFinal: %v", err)
	}
	return n
}

// Unhex decodes hex, ignoring spaces; it panics on bad input (test data).
func Unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// Random is n random bytes, a key value or data no other test uses.
func Random(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("lab: random: %v", err)
	}
	return b
}

// AESBlock is E_key(block), one AES block computed by crypto/aes: the
// software reference of the tests.
func AESBlock(tb testing.TB, key, block []byte) []byte {
	tb.Helper()
	c, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatalf("lab: AES key of %d bytes: %v", len(key), err)
	}
	out := make([]byte, aes.BlockSize)
	c.Encrypt(out, block)
	return out
}
