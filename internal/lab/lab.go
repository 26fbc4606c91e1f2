package lab

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/p11derive/p11derive/internal/ckm"
)

// SkipEnv is the environment variable that, set to 1, makes lab tests skip
// instead of failing when a tool or module is missing.
const SkipEnv = "P11DERIVE_LAB_SKIP"

// Token kinds.
const (
	KindSoftHSM2 = "softhsm2"
	KindNSS      = "nss"
)

// Token describes a lab token, ready to be opened with github.com/miekg/pkcs11
// in-process (see Open) or by a subprocess.
type Token struct {
	Kind     string   // KindSoftHSM2 or KindNSS
	Module   string   // path of the PKCS#11 module to load
	InitArgs string   // C_Initialize pReserved string ("" for SoftHSM2)
	Label    string   // label of the token to select
	SlotID   uint     // slot ID of that token
	Login    bool     // whether sessions must C_Login(CKU_USER, PIN)
	PIN      string   // user PIN ("" for NSSDB, whose password is empty)
	SOPIN    string   // security officer PIN (SoftHSM2 only)
	Dir      string   // directory holding the token's files
	Env      []string // environment a subprocess needs, e.g. "SOFTHSM2_CONF=..."

	shared bool // lives until Main's cleanup; Open never finalises its module
}

// Setenv sets tok.Env in the process environment with tb.Setenv (restored when
// the test ends), for code under test that initialises tok.Module in-process.
// Like tb.Setenv, it cannot be used in parallel tests.
func (tok *Token) Setenv(tb testing.TB) {
	tb.Helper()
	for _, kv := range tok.Env {
		k, v, _ := strings.Cut(kv, "=")
		tb.Setenv(k, v)
	}
}

// An Option changes the SoftHSM2 token that SoftHSM2 makes.
type Option func(*softhsmOptions)

type softhsmOptions struct {
	hide  []string
	label string
}

// HideMechanisms makes the SoftHSM2 token leave out the named mechanisms
// ("CKM_AES_ECB_ENCRYPT_DATA", ...) from C_GetMechanismList and refuse them.
// A name that github.com/miekg/pkcs11 does not define fails the test.
func HideMechanisms(names ...string) Option {
	return func(o *softhsmOptions) { o.hide = append(o.hide, names...) }
}

// TokenLabel gives the SoftHSM2 token label instead of the default
// "p11derive-lab" (the README's walk-through needs "payments").
func TokenLabel(label string) Option {
	return func(o *softhsmOptions) { o.label = label }
}

// Defaults of the SoftHSM2 tokens.
const (
	softhsmLabel = "p11derive-lab"
	softhsmPIN   = "1234"
	softhsmSOPIN = "12345678"
)

var slotLine = regexp.MustCompile(`reassigned to slot ([0-9]+)`)

// SoftHSM2 makes a fresh SoftHSM2 token in a t.TempDir: its own configuration,
// token directory and copy of libsofthsm2.so (see the package doc for why).
// The token lives as long as the test.
func SoftHSM2(tb testing.TB, opts ...Option) *Token {
	tb.Helper()
	skipIfAsked(tb)
	return newSoftHSM2(tb, tb.TempDir(), opts)
}

// Fataler is the part of testing.TB the token makers need, so that harnesses
// that are not a testing.TB (testscript's Setup) can make tokens too.
type Fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// SoftHSM2In makes a fresh SoftHSM2 token in dir, like SoftHSM2, for
// harnesses without a testing.TB. The caller removes dir.
func SoftHSM2In(f Fataler, dir string, opts ...Option) *Token {
	return newSoftHSM2(f, dir, opts)
}

// SharedSoftHSM2 returns a SoftHSM2 token shared by the whole test binary, made
// on first use and removed by Main (the test binary's TestMain must call Main).
// Its SOFTHSM2_CONF stays set in the process environment, so code under test
// can initialise its Module in-process without Setenv, and Open never
// finalises its module: it stays initialised until Main's cleanup.
func SharedSoftHSM2(tb testing.TB) *Token {
	tb.Helper()
	skipIfAsked(tb)
	requireMain(tb)
	shared.Lock()
	defer shared.Unlock()
	if shared.softhsm == nil {
		dir := sharedDir(tb, "p11derive-lab-softhsm2-")
		tok := newSoftHSM2(tb, dir, nil)
		tok.shared = true
		modules.Lock()  // Open changes the environment under this lock
		setenv(tok.Env) // for good: no restore
		modules.Unlock()
		shared.softhsm = tok
	}
	tok := *shared.softhsm
	return &tok
}

func newSoftHSM2(tb Fataler, dir string, opts []Option) *Token {
	tb.Helper()
	var o softhsmOptions
	for _, opt := range opts {
		opt(&o)
	}
	mechanisms := "ALL"
	if len(o.hide) > 0 {
		for _, name := range o.hide {
			if _, ok := ckm.Lookup(name); !ok {
				tb.Fatalf("lab: HideMechanisms: unknown mechanism name %q", name)
			}
		}
		// A list that starts with "-" names the mechanisms to disable.
		// SoftHSM2 2.6.1 keeps the "-" in the first name, which then
		// matches nothing (fixed in 2.7.0), so the first name is empty.
		mechanisms = "-," + strings.Join(o.hide, ",")
	}
	util := lookTool(tb, "softhsm2-util", "softhsm2")
	lib := findModule(tb, "softhsm2", softhsmCandidates())

	tokens := filepath.Join(dir, "tokens")
	conf := filepath.Join(dir, "softhsm2.conf")
	module := filepath.Join(dir, "libsofthsm2.so")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		tb.Fatalf("lab: %v", err)
	}
	config := fmt.Sprintf(`directories.tokendir = %s
objectstore.backend = file
log.level = ERROR
slots.removable = false
slots.mechanisms = %s
`, tokens, mechanisms)
	if err := os.WriteFile(conf, []byte(config), 0o600); err != nil {
		tb.Fatalf("lab: %v", err)
	}
	if err := CopyFile(lib, module); err != nil {
		tb.Fatalf("lab: copy SoftHSM2 module: %v", err)
	}
	tok := &Token{
		Kind:   KindSoftHSM2,
		Module: module,
		Label:  cmp.Or(o.label, softhsmLabel),
		Login:  true,
		PIN:    softhsmPIN,
		SOPIN:  softhsmSOPIN,
		Dir:    dir,
		Env:    []string{"SOFTHSM2_CONF=" + conf},
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", tok.Label, "--so-pin", tok.SOPIN, "--pin", tok.PIN)
	cmd.Env = append(os.Environ(), tok.Env...) // the last SOFTHSM2_CONF wins
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("lab: softhsm2-util --init-token: %v\n%s", err, out)
	}
	m := slotLine.FindSubmatch(out)
	if m == nil {
		tb.Fatalf("lab: softhsm2-util --init-token did not say which slot the token got:\n%s", out)
	}
	slot, err := strconv.ParseUint(string(m[1]), 10, 0)
	if err != nil {
		tb.Fatalf("lab: softhsm2-util slot %q: %v", m[1], err)
	}
	tok.SlotID = uint(slot)
	return tok
}

// The two slots of the NSS softoken; their IDs and labels are fixed by NSS.
const (
	nssCryptoSlot  = 1
	nssCryptoLabel = "NSS Generic Crypto Services"
	nssDBSlot      = 2
	nssDBLabel     = "NSS Certificate DB"
)

// NSS returns the NSS softoken's "NSS Generic Crypto Services" slot: session
// objects without login (C_CreateObject of secret keys with CKA_VALUE,
// C_GenerateKey, C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA), no token objects.
// It is shared by the whole test binary, whose TestMain must call Main.
func NSS(tb testing.TB) *Token {
	tb.Helper()
	return nssToken(tb, nssCryptoSlot, nssCryptoLabel, false)
}

// NSSDB returns the NSS softoken's "NSS Certificate DB" slot, whose token
// objects persist in an NSS database that other processes can open (until the
// test binary ends). Its password is empty. It shares the module and the
// directory of NSS; the test binary's TestMain must call Main.
func NSSDB(tb testing.TB) *Token {
	tb.Helper()
	return nssToken(tb, nssDBSlot, nssDBLabel, true)
}

// The shared lab tokens, by name: what every package's tests run on.
const (
	SharedSoftHSM2Name = "softhsm2" // SharedSoftHSM2
	NSSName            = "nss"      // NSS: the crypto slot
	NSSDBName          = "nssdb"    // NSSDB: the key database slot
)

// SharedNames lists the shared lab tokens.
var SharedNames = []string{SharedSoftHSM2Name, NSSName, NSSDBName}

// Shared is the shared lab token named name (one of SharedNames).
func Shared(tb testing.TB, name string) *Token {
	tb.Helper()
	switch name {
	case SharedSoftHSM2Name:
		return SharedSoftHSM2(tb)
	case NSSName:
		return NSS(tb)
	case NSSDBName:
		return NSSDB(tb)
	}
	tb.Fatalf("lab: no shared lab token %q", name)
	return nil
}

func nssToken(tb testing.TB, slot uint, label string, login bool) *Token {
	tb.Helper()
	skipIfAsked(tb)
	requireMain(tb)
	module := findModule(tb, "libnss3", nssCandidates())
	dir := nssDir(tb)
	return &Token{
		Kind:     KindNSS,
		Module:   module,
		InitArgs: fmt.Sprintf("configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' flags=", dir),
		Label:    label,
		SlotID:   slot,
		Login:    login,
		Dir:      dir,
		shared:   true,
	}
}

// labelSeq numbers the labels UniqueLabel makes in this process.
var labelSeq atomic.Uint64

// UniqueLabel returns prefix followed by the process ID and a number no other
// call in this process returns: a label that no earlier test, earlier run of
// the same test (go test -count=N runs every test N times in one process, on
// the same shared tokens) or concurrent test of this process has used.
func UniqueLabel(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), labelSeq.Add(1))
}

// Process-wide state: what Main removes.
var (
	mainActive atomic.Bool
	shared     struct {
		sync.Mutex
		dirs    []string // directories to remove at the end
		nssDir  string
		softhsm *Token
	}
)

func requireMain(tb testing.TB) {
	tb.Helper()
	if !mainActive.Load() {
		tb.Fatalf("lab: shared tokens live until the test binary ends: its TestMain must call lab.Main(m)")
	}
}

// sharedDir makes a directory that Main removes; the caller holds shared.
func sharedDir(tb testing.TB, pattern string) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		tb.Fatalf("lab: %v", err)
	}
	shared.dirs = append(shared.dirs, dir)
	return dir
}

// nssDir returns the process's NSS database directory, making it on first use.
func nssDir(tb testing.TB) string {
	tb.Helper()
	certutil := lookTool(tb, "certutil", "libnss3-tools")
	shared.Lock()
	defer shared.Unlock()
	if shared.nssDir != "" {
		return shared.nssDir
	}
	dir := sharedDir(tb, "p11derive-lab-nss-")
	if strings.ContainsRune(dir, '\'') {
		tb.Fatalf("lab: NSS directory %q holds a quote, which NSS init args cannot carry", dir)
	}
	out, err := exec.Command(certutil, "-N", "-d", "sql:"+dir, "--empty-password").CombinedOutput()
	if err != nil {
		tb.Fatalf("lab: certutil -N: %v\n%s", err, out)
	}
	shared.nssDir = dir
	return dir
}

// Main runs the tests of a package that uses lab tokens, then finalises the
// modules Open left initialised and removes the shared tokens' directories.
// Call it from TestMain. It returns m.Run's exit code, which the test binary
// exits with when TestMain returns (os.Exit(lab.Main(m)) works too):
//
//	func TestMain(m *testing.M) { lab.Main(m) }
func Main(m interface{ Run() int }) int {
	mainActive.Store(true)
	code := m.Run()
	finalizeAll()
	shared.Lock()
	defer shared.Unlock()
	for _, dir := range shared.dirs {
		if err := os.RemoveAll(dir); err != nil {
			fmt.Fprintf(os.Stderr, "lab: %v\n", err)
		}
	}
	shared.dirs, shared.nssDir, shared.softhsm = nil, "", nil
	return code
}

func skipIfAsked(tb testing.TB) {
	tb.Helper()
	if os.Getenv(SkipEnv) == "1" {
		tb.Skipf("lab: %s=1: skipping a test that needs a lab token", SkipEnv)
	}
}

func lookTool(tb Fataler, tool, pkg string) string {
	tb.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		tb.Fatalf("lab: %s not found: install the Debian package %s (or set %s=1 to skip lab tests): %v", tool, pkg, SkipEnv, err)
	}
	return path
}

func findModule(tb Fataler, pkg string, candidates []string) string {
	tb.Helper()
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	tb.Fatalf("lab: no PKCS#11 module at %s: install the Debian package %s (or set %s=1 to skip lab tests)", strings.Join(candidates, ", "), pkg, SkipEnv)
	return ""
}

// multiarch is the Debian multiarch directory name of this architecture.
func multiarch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64-linux-gnu"
	case "arm64":
		return "aarch64-linux-gnu"
	case "386":
		return "i386-linux-gnu"
	case "arm":
		return "arm-linux-gnueabihf"
	case "ppc64le":
		return "powerpc64le-linux-gnu"
	case "riscv64":
		return "riscv64-linux-gnu"
	default:
		return runtime.GOARCH + "-linux-gnu"
	}
}

func softhsmCandidates() []string {
	return []string{
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/" + multiarch() + "/softhsm/libsofthsm2.so",
		"/usr/lib64/pkcs11/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so",
	}
}

func nssCandidates() []string { return libPaths("libsoftokn3.so", "nss/libsoftokn3.so") }

// libPaths is where a library may be, for each path rel relative to a
// library directory: the multiarch directory (Debian), /usr/lib64 (Fedora),
// /usr/lib.
func libPaths(rels ...string) []string {
	var out []string
	for _, rel := range rels {
		out = append(out, "/usr/lib/"+multiarch()+"/"+rel, "/usr/lib64/"+rel, "/usr/lib/"+rel)
	}
	return out
}

// CopyFile copies src (following symlinks) to a new file dst: a copy, not a
// link, so that dlopen sees a different file and loads a separate instance.
func CopyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
