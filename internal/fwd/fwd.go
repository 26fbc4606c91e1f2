package fwd

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef unsigned long (*fwd_str_fn)(const char *);
typedef unsigned long (*fwd_check_fn)(const char *, char *, size_t);

// fwd_open returns a handle on the library at path: only if it is already
// loaded (noload), or loading it.
static void *fwd_open(const char *path, int noload) {
	return dlopen(path, RTLD_NOW | RTLD_LOCAL | (noload ? RTLD_NOLOAD : 0));
}

// fwd_call calls sym(arg) in the library h; it returns 0 if there is no sym.
static int fwd_call(void *h, const char *sym, const char *arg, unsigned long *ret) {
	fwd_str_fn f = (fwd_str_fn)dlsym(h, sym);
	if (f == NULL)
		return 0;
	*ret = f(arg);
	return 1;
}

// fwd_check calls p11fwd_check in the library h; it returns 0 if there is none.
static int fwd_check(void *h, const char *spec, char *err, size_t n, unsigned long *ret) {
	fwd_check_fn f = (fwd_check_fn)dlsym(h, "p11fwd_check");
	if (f == NULL)
		return 0;
	*ret = f(spec, err, n);
	return 1;
}
*/
import "C"

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/lab"
)

//go:embed csrc/p11fwd.c
var source []byte

// Config is what a forwarder copy does besides forwarding.
type Config struct {
	// Hide lists mechanisms to hide, by name ("CKM_AES_ECB_ENCRYPT_DATA") or
	// number ("0x1104").
	Hide []string
	// Faults lists the calls to fail.
	Faults []Fault
	// Corrupt lists the functions whose results to corrupt: "C_Sign" (every
	// call), "C_Sign:2" (the 2nd call only) or "C_Sign:2+" (every call from
	// the 2nd on).
	Corrupt []string
	// EmulateStreamUnwrap plays a token that unwraps one block with
	// CKM_AES_CTR, CKM_AES_OFB or CKM_AES_CFB128 (none of the lab tokens
	// does): the forwarder computes E_K(x) with the real module's C_Encrypt
	// (with a session copy of K that may encrypt, destroyed at once), makes
	// the key with C_CreateObject, and C_GetMechanismInfo gives the three
	// modes CKF_UNWRAP. Key material passes through the forwarder's memory:
	// tests only.
	EmulateStreamUnwrap bool
	// WeakTemplates plays a token that ignores CKA_SENSITIVE and
	// CKA_EXTRACTABLE in the templates of C_CreateObject, C_GenerateKey,
	// C_UnwrapKey and C_DeriveKey: the forwarder leaves the caller's
	// values out and asks for CKA_SENSITIVE=false, CKA_EXTRACTABLE=true,
	// so every key made comes out readable and extractable (until the
	// caller tightens it with C_SetAttributeValue, which passes through).
	WeakTemplates bool
	// NoValueLen plays a token that gives no CKA_VALUE_LEN: C_GetAttributeValue
	// answers for it as for an attribute the object does not have
	// (CK_UNAVAILABLE_INFORMATION, CKR_ATTRIBUTE_TYPE_INVALID).
	NoValueLen bool
	// PadTokenInfo plays a token whose CK_TOKEN_INFO strings (label,
	// manufacturerID, model, serialNumber) are padded with NUL bytes
	// rather than spaces.
	PadTokenInfo bool
	// NoFlag clears CKF_ flags of mechanisms in C_GetMechanismInfo, each
	// entry "MECH:FLAG" ("CKM_AES_ECB:CKF_UNWRAP"): the mechanism stays
	// listed, and calls using it are still forwarded.
	NoFlag []string
	// Delays make calls sleep before they are forwarded (or failed): the
	// round trip of a network HSM, played. The forwarder sleeps, it does
	// not spin, so calls from other threads go on meanwhile. A Delay for
	// "*" applies to every function; later entries override earlier ones.
	Delays []Delay
	// MaxSessions, when not 0, plays a token that allows that many open
	// sessions: C_GetTokenInfo reports it as ulMaxSessionCount (and the
	// sessions open through the copy as ulSessionCount), and C_OpenSession
	// answers CKR_SESSION_COUNT, without forwarding, while that many
	// sessions opened through the copy are open.
	MaxSessions int
}

// Delay is the sleep before every call of Func ("C_DeriveKey", or "*" for
// every function), in whole microseconds.
type Delay struct {
	Func string
	D    time.Duration
}

// Uninitialised is the faults of a module whose function list was never
// initialised behind its slot and token functions (a proxy that lost the
// module it forwards to): every call that makes, reads or uses an object
// answers ckr (CKR_CRYPTOKI_NOT_INITIALIZED, CKR_GENERAL_ERROR...), while
// C_GetSlotList, C_GetTokenInfo, C_GetMechanismList/Info and the session
// calls work.
func Uninitialised(ckr uint) []Fault {
	var out []Fault
	for _, f := range []string{"C_CreateObject", "C_CopyObject", "C_DestroyObject", "C_GetAttributeValue",
		"C_SetAttributeValue", "C_FindObjectsInit", "C_FindObjects", "C_EncryptInit", "C_Encrypt",
		"C_DecryptInit", "C_Decrypt", "C_SignInit", "C_Sign", "C_GenerateKey", "C_WrapKey", "C_UnwrapKey",
		"C_DeriveKey"} {
		out = append(out, Fault{Func: f, N: 1, From: true, CKR: ckr})
	}
	return out
}

// Fault fails call number N (1-based, counted since the last configuration)
// of the function Func ("C_Sign"), or with From every call from the Nth on,
// with CKR, without forwarding it.
type Fault struct {
	Func string
	N    int
	From bool // every call from the Nth on
	CKR  uint
}

// lists returns the hide, fail and corrupt lists of c in the forwarder's syntax.
func (c Config) lists() (hide, fail, corrupt, noflag string, err error) {
	faults := make([]string, 0, len(c.Faults))
	for _, f := range c.Faults {
		n := strconv.Itoa(f.N)
		if f.From {
			n += "+"
		}
		faults = append(faults, fmt.Sprintf("%s:%s:%#x", f.Func, n, f.CKR))
	}
	for _, list := range [][]string{c.Hide, faults, c.Corrupt, c.NoFlag} {
		for _, s := range list {
			if s == "" || strings.ContainsAny(s, ",;=\n\r#") {
				return "", "", "", "", fmt.Errorf("bad entry %q", s)
			}
		}
	}
	return strings.Join(c.Hide, ","), strings.Join(faults, ","), strings.Join(c.Corrupt, ","), strings.Join(c.NoFlag, ","), nil
}

// delays returns c.Delays in the forwarder's syntax.
func (c Config) delays() (string, error) {
	out := make([]string, 0, len(c.Delays))
	for _, d := range c.Delays {
		if d.Func == "" || strings.ContainsAny(d.Func, ",;=:\n\r#") || d.D < 0 {
			return "", fmt.Errorf("bad delay %q: %v", d.Func, d.D)
		}
		out = append(out, fmt.Sprintf("%s:%d", d.Func, d.D.Microseconds()))
	}
	return strings.Join(out, ","), nil
}

func (c Config) maxSessions() string {
	if c.MaxSessions <= 0 {
		return ""
	}
	return strconv.Itoa(c.MaxSessions)
}

func (c Config) emulate() string {
	var on []string
	for _, e := range []struct {
		on   bool
		name string
	}{{c.EmulateStreamUnwrap, "stream-unwrap"}, {c.WeakTemplates, "weak-templates"},
		{c.NoValueLen, "no-value-len"}, {c.PadTokenInfo, "pad-token-info"}} {
		if e.on {
			on = append(on, e.name)
		}
	}
	return strings.Join(on, ",")
}

// spec returns c in the forwarder's syntax.
func (c Config) spec() (string, error) {
	hide, fail, corrupt, noflag, err := c.lists()
	if err != nil {
		return "", err
	}
	delay, err := c.delays()
	spec := "hide=" + hide + ";fail=" + fail + ";corrupt=" + corrupt + ";noflag=" + noflag + ";emulate=" + c.emulate() + ";delay=" + delay
	if m := c.maxSessions(); m != "" {
		spec += ";max-sessions=" + m
	}
	return spec, err
}

// Environment variables a subprocess reads when the copy it loads has no
// configuration file next to it.
const (
	EnvModule   = "P11FWD_MODULE"
	EnvInitArgs = "P11FWD_INITARGS"
	EnvHide     = "P11FWD_HIDE"
	EnvFail     = "P11FWD_FAIL"
	EnvCorrupt  = "P11FWD_CORRUPT"
	EnvEmulate  = "P11FWD_EMULATE"
	EnvNoFlag   = "P11FWD_NOFLAG"
	EnvDelay    = "P11FWD_DELAY"
	EnvMaxSess  = "P11FWD_MAX_SESSIONS"
)

// Headers the forwarder is compiled with, and their Debian packages.
var includes = []struct{ dir, probe, pkg string }{
	{"/usr/include/nss", "pkcs11.h", "libnss3-dev"},
	{"/usr/include/nspr", "prtypes.h", "libnspr4-dev"},
}

// cflags are the compiler flags of the forwarder, besides the include directories.
var cflags = []string{"-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden", "-pthread"}

var built struct {
	sync.Mutex
	done    bool
	path    string
	err     error
	missing bool // err is a missing tool or header
}

// Build compiles the forwarder (gcc -shared -fPIC -O2 -Wall -Wextra -Werror)
// once per test binary and returns the path of the shared library. The
// library lands in a cache directory (the user cache directory, else the
// temporary directory) under a name derived from its source, its generated
// name table, the flags and the compiler version, so test binaries and
// later runs reuse it.
//
// The returned library has no configuration file: a process that loads it
// reads the P11FWD_* environment variables. Load it only in subprocesses, or
// through copies (Wrap).
//
// A missing compiler or header fails the test with the Debian package to
// install, or skips it if P11DERIVE_LAB_SKIP=1 (lab.SkipEnv).
func Build(tb testing.TB) string {
	tb.Helper()
	built.Lock()
	defer built.Unlock()
	if !built.done {
		built.path, built.err = build()
		var m *missingError
		built.missing = errors.As(built.err, &m)
		built.done = true
	}
	if built.err != nil {
		if built.missing && os.Getenv(lab.SkipEnv) == "1" {
			tb.Skipf("fwd: %v (%s=1)", built.err, lab.SkipEnv)
		}
		tb.Fatalf("fwd: build the forwarder: %v", built.err)
	}
	return built.path
}

type missingError struct{ what, pkg string }

func (e *missingError) Error() string {
	return fmt.Sprintf("%s not found: install the Debian package %s (or set %s=1 to skip lab tests)", e.what, e.pkg, lab.SkipEnv)
}

var macroLine = regexp.MustCompile(`(?m)^#define (CK[MR]_[A-Za-z0-9_]+) `)

func build() (string, error) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", &missingError{"gcc", "gcc"}
	}
	args := slices.Clone(cflags)
	for _, inc := range includes {
		if _, err := os.Stat(filepath.Join(inc.dir, inc.probe)); err != nil {
			return "", &missingError{filepath.Join(inc.dir, inc.probe), inc.pkg}
		}
		args = append(args, "-isystem", inc.dir)
	}

	// The name table: every object-like CKM_ and CKR_ macro the header defines.
	cmd := exec.Command(gcc, append([]string{"-dM", "-E", "-x", "c", "-"}, args[len(cflags):]...)...)
	cmd.Stdin = strings.NewReader("#include <pkcs11.h>\n")
	macros, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("gcc -dM -E <pkcs11.h>: %w%s", err, stderrOf(err))
	}
	names := nameTable(macros)
	version, err := exec.Command(gcc, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("gcc --version: %w", err)
	}

	h := sha256.New()
	for _, b := range [][]byte{source, names, []byte(strings.Join(args, " ")), version} {
		fmt.Fprintf(h, "%d\n", len(b))
		h.Write(b)
	}
	dir := filepath.Join(cacheDir(), hex.EncodeToString(h.Sum(nil))[:24])
	lib := filepath.Join(dir, "libp11fwd.so")
	if _, err := os.Stat(lib); err == nil {
		return lib, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	src := filepath.Join(tmp, "p11fwd.c")
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, "p11fwd_names.h"), names, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(tmp, "libp11fwd.so")
	args = append(args, "-I", tmp, "-o", out, src, "-ldl")
	if msg, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	// Another test binary may build the same library at the same time: the
	// rename is atomic, and either result is the same.
	if err := os.Rename(out, lib); err != nil {
		return "", err
	}
	return lib, nil
}

// nameTable writes the C tables of the CKM_ and CKR_ macro names in macros
// (the output of gcc -dM -E).
func nameTable(macros []byte) []byte {
	var mechs, rvs []string
	for _, m := range macroLine.FindAllSubmatch(macros, -1) {
		name := string(m[1])
		if strings.HasPrefix(name, "CKM_") {
			mechs = append(mechs, name)
		} else {
			rvs = append(rvs, name)
		}
	}
	slices.Sort(mechs)
	slices.Sort(rvs)
	var b bytes.Buffer
	b.WriteString("/* Code generated by fwd.Build from the CKM_ and CKR_ macros of <pkcs11.h>; DO NOT EDIT. */\n")
	for _, t := range []struct {
		name  string
		names []string
	}{{"mech_names", mechs}, {"rv_names", rvs}} {
		fmt.Fprintf(&b, "static const struct name %s[] = {\n", t.name)
		for _, n := range t.names {
			fmt.Fprintf(&b, "\t{%q, %s},\n", n, n)
		}
		b.WriteString("\t{NULL, 0},\n};\n")
	}
	return b.Bytes()
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return "\n" + string(ee.Stderr)
	}
	return ""
}

func cacheDir() string {
	if dir, err := os.UserCacheDir(); err == nil {
		return filepath.Join(dir, "p11derive", "fwd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("p11derive-fwd-%d", os.Getuid()))
}

// Wrap returns a lab token that reaches real through a fresh copy of the
// forwarder configured with cfg: its own file (in a t.TempDir), hence its own
// instance, configuration and counters in the process. The configuration is
// written next to the copy (Module + ".conf"), so the copy needs nothing in
// the environment, in-process or in a subprocess.
//
// The token has real's Kind, Label, SlotID, Login, PIN, SOPIN, InitArgs and
// Dir; its Module is the copy, and its Env is real's plus the P11FWD_*
// variables describing the same configuration (initargs is real's
// InitArgs), for a subprocess that loads a copy without a configuration
// file. An invalid cfg fails the test.
func Wrap(tb testing.TB, real *lab.Token, cfg Config) *lab.Token {
	tb.Helper()
	so := Build(tb)
	spec, err := cfg.spec()
	if err != nil {
		tb.Fatalf("fwd: Wrap: %v", err)
	}
	if err := check(so, false, spec); err != nil {
		tb.Fatalf("fwd: Wrap: %v", err)
	}
	if strings.ContainsAny(real.Module+real.InitArgs, ";\n\r") {
		tb.Fatalf("fwd: Wrap: the module path and init args of the real token cannot hold ';' or newlines")
	}

	module := filepath.Join(tb.TempDir(), "libp11fwd.so")
	if err := lab.CopyFile(so, module); err != nil {
		tb.Fatalf("fwd: copy the forwarder: %v", err)
	}
	hide, fail, corrupt, noflag, _ := cfg.lists()
	delay, _ := cfg.delays()
	settings := []struct{ key, env, value string }{
		{"module", EnvModule, real.Module},
		{"initargs", EnvInitArgs, real.InitArgs},
		{"hide", EnvHide, hide},
		{"fail", EnvFail, fail},
		{"corrupt", EnvCorrupt, corrupt},
		{"emulate", EnvEmulate, cfg.emulate()},
		{"noflag", EnvNoFlag, noflag},
		{"delay", EnvDelay, delay},
		{"max-sessions", EnvMaxSess, cfg.maxSessions()},
	}
	var conf strings.Builder
	conf.WriteString("# Configuration of the p11fwd copy next to this file, written by fwd.Wrap.\n")
	tok := *real // also copies lab's private state (a shared token stays loaded until lab.Main)
	tok.Module = module
	tok.Env = slices.Clone(real.Env)
	for _, s := range settings {
		fmt.Fprintf(&conf, "%s=%s\n", s.key, s.value)
		tok.Env = append(tok.Env, s.env+"="+s.value)
	}
	if err := os.WriteFile(module+".conf", []byte(conf.String()), 0o644); err != nil {
		tb.Fatalf("fwd: %v", err)
	}
	return &tok
}

// Configure replaces the configuration of the forwarder copy tok.Module,
// loaded in this process (lab.Open it first), and resets its call counters.
// It does not change the copy's configuration file or tok.Env: a subprocess,
// or a new load of the copy, still gets Wrap's configuration.
func Configure(tb testing.TB, tok *lab.Token, cfg Config) {
	tb.Helper()
	spec, err := cfg.spec()
	if err != nil {
		tb.Fatalf("fwd: Configure: %v", err)
	}
	if err := check(tok.Module, true, spec); err != nil {
		tb.Fatalf("fwd: Configure: %v", err)
	}
	rv, err := call(tok.Module, "p11fwd_configure", spec)
	if err != nil {
		tb.Fatalf("fwd: Configure: %v", err)
	}
	if rv != pkcs11.CKR_OK {
		tb.Fatalf("fwd: Configure %q: %v", spec, pkcs11.Error(rv))
	}
}

// Calls returns how many times the function fn ("C_Sign") was called through
// the forwarder copy tok.Module, loaded in this process, since its last
// configuration (Configure, or Wrap's configuration read at its first
// C_Initialize). See the package doc for what counts as a call.
func Calls(tb testing.TB, tok *lab.Token, fn string) int {
	tb.Helper()
	n, err := call(tok.Module, "p11fwd_calls", fn)
	if err != nil {
		tb.Fatalf("fwd: Calls: %v", err)
	}
	if n == uint(^C.ulong(0)) {
		tb.Fatalf("fwd: Calls: unknown PKCS#11 function %q", fn)
	}
	return int(n)
}

// open returns a dlopen handle on the library at path; with noload, only if
// the process has already loaded it.
func open(path string, noload bool) (unsafe.Pointer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var nl C.int
	if noload {
		nl = 1
	}
	h := C.fwd_open(cpath, nl)
	if h == nil {
		if noload {
			return nil, fmt.Errorf("forwarder %s is not loaded in this process (lab.Open the token first)", path)
		}
		return nil, fmt.Errorf("dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	return h, nil
}

// call calls the exported function sym(arg) of the loaded copy at path.
func call(path, sym, arg string) (uint, error) {
	h, err := open(path, true)
	if err != nil {
		return 0, err
	}
	defer C.dlclose(h)
	csym, carg := C.CString(sym), C.CString(arg)
	defer C.free(unsafe.Pointer(csym))
	defer C.free(unsafe.Pointer(carg))
	var ret C.ulong
	if C.fwd_call(h, csym, carg, &ret) == 0 {
		return 0, fmt.Errorf("%s has no %s: not a forwarder", path, sym)
	}
	return uint(ret), nil
}

// check parses spec with the forwarder at path (loading it unless noload)
// and returns its complaint.
func check(path string, noload bool, spec string) error {
	h, err := open(path, noload)
	if err != nil {
		return err
	}
	defer C.dlclose(h)
	cspec := C.CString(spec)
	defer C.free(unsafe.Pointer(cspec))
	var msg [300]C.char
	var rv C.ulong
	if C.fwd_check(h, cspec, &msg[0], C.size_t(len(msg)), &rv) == 0 {
		return fmt.Errorf("%s has no p11fwd_check: not a forwarder", path)
	}
	if rv != 0 {
		return fmt.Errorf("configuration %q: %s", spec, C.GoString(&msg[0]))
	}
	return nil
}
