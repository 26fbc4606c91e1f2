package lab

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef void (*lab_override_fn)(const char *, const char *, const char *, const char *, const char *);
typedef unsigned long (*lab_gfl_fn)(void **);

static void *lab_dlopen(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }

static int lab_override(void *h, const char *sysconf, const char *userconf,
                        const char *pkgmods, const char *sysmods, const char *usermods) {
	lab_override_fn f = (lab_override_fn)dlsym(h, "p11_kit_override_system_files");
	if (f == NULL)
		return -1;
	f(sysconf, userconf, pkgmods, sysmods, usermods);
	return 0;
}

static unsigned long lab_get_function_list(void *h, void **list) {
	lab_gfl_fn f = (lab_gfl_fn)dlsym(h, "C_GetFunctionList");
	if (f == NULL)
		return ~0UL;
	return f(list);
}
*/
import "C"

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// proxyModuleName is the name of the module file that Proxy registers: the
// proxied token's module is the p11-kit module "lab".
const proxyModuleName = "lab"

func proxyCandidates() []string { return libPaths("p11-kit-proxy.so") }

func clientCandidates() []string { return libPaths("pkcs11/p11-kit-client.so") }

// proxyFiles is what Proxy made for one proxied token.
type proxyFiles struct {
	moduleFile string // DIR/home/.config/pkcs11/modules/lab.module
}

// proxyInfo maps the Module of a Proxy token to its files (for tests of the
// rig itself).
var proxyInfo sync.Map // string → proxyFiles

// Proxy returns a Token that reaches tok through p11-kit-proxy.so, in
// process, the way an application configured for p11-kit reaches a
// registered module: its Module is a copy of p11-kit-proxy.so in a
// t.TempDir (an independent p11-kit instance, see the package doc) whose
// configuration registers tok.Module alone (with tok.InitArgs as
// x-init-reserved), its SlotID the slot of tok.Label as the proxy numbers
// it, InitArgs empty, and Env tok.Env plus HOME, the home holding that
// configuration (a subprocess not running as root can use it; p11-kit
// ignores user configuration as root).
//
// Proxy keeps tok's own module initialised until the test ends, so that
// p11-kit never finalises the instance that tok and the proxy share (p11-kit
// does not call C_Finalize on a module that answered
// CKR_CRYPTOKI_ALREADY_INITIALIZED).
func Proxy(tb testing.TB, tok *Token) *Token {
	tb.Helper()
	skipIfAsked(tb)
	proxy := findModule(tb, "p11-kit-modules", proxyCandidates())
	if strings.ContainsAny(tok.Module+tok.InitArgs, "\n\r") {
		tb.Fatalf("lab: Proxy: module path or init args hold a newline, which a p11-kit module file cannot carry")
	}
	dir := tb.TempDir()
	home := filepath.Join(dir, "home")
	confDir := filepath.Join(home, ".config", "pkcs11")
	modDir := filepath.Join(confDir, "modules")
	none := filepath.Join(dir, "no-modules")
	for _, d := range []string{modDir, none} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			tb.Fatalf("lab: %v", err)
		}
	}
	conf := filepath.Join(confDir, "pkcs11.conf")
	// user-config: only keeps the system's modules (p11-kit-trust, opensc,
	// softhsm2 in /usr/share/p11-kit/modules) out of the proxy.
	if err := os.WriteFile(conf, []byte("user-config: only\n"), 0o600); err != nil {
		tb.Fatalf("lab: %v", err)
	}
	moduleFile := filepath.Join(modDir, proxyModuleName+".module")
	if err := os.WriteFile(moduleFile, []byte(moduleConfig(tok)), 0o600); err != nil {
		tb.Fatalf("lab: %v", err)
	}
	module := filepath.Join(dir, "p11-kit-proxy.so")
	if err := CopyFile(proxy, module); err != nil {
		tb.Fatalf("lab: copy p11-kit-proxy.so: %v", err)
	}

	// In process, point the copy at the configuration with
	// p11_kit_override_system_files (HOME alone does not do as root). The
	// handle keeps the copy loaded, overrides included, until the test ends.
	cModule := C.CString(module)
	defer C.free(unsafe.Pointer(cModule))
	handle := C.lab_dlopen(cModule)
	if handle == nil {
		tb.Fatalf("lab: dlopen %s: %s", module, C.GoString(C.dlerror()))
	}
	// p11-kit keeps these pointers: they live as long as the process (a few
	// bytes per Proxy), since code under test may keep the copy loaded.
	cConf, cNone, cMods := C.CString(conf), C.CString(none), C.CString(modDir)
	if C.lab_override(handle, cConf, cConf, cNone, cMods, cMods) != 0 {
		C.dlclose(handle)
		tb.Fatalf("lab: %s has no p11_kit_override_system_files (p11-kit older than 0.23.10?)", module)
	}
	tb.Cleanup(func() { C.dlclose(handle) })

	direct, err := acquire(tok)
	if err != nil {
		tb.Fatalf("lab: Proxy: open %s module %s: %v", tok.Kind, tok.Module, err)
	}
	tb.Cleanup(func() { release(direct) })

	pt := &Token{
		Kind:   tok.Kind,
		Module: module,
		Label:  tok.Label,
		Login:  tok.Login,
		PIN:    tok.PIN,
		SOPIN:  tok.SOPIN,
		Dir:    tok.Dir,
		Env:    append(append([]string(nil), tok.Env...), "HOME="+home),
	}
	proxyInfo.Store(module, proxyFiles{moduleFile: moduleFile})
	tb.Cleanup(func() { proxyInfo.Delete(module) })
	pt.SlotID = slotByLabel(tb, pt)
	return pt
}

// moduleConfig is the p11-kit module file registering tok's module.
func moduleConfig(tok *Token) string {
	s := "module: " + tok.Module + "\ncritical: yes\n"
	if tok.InitArgs != "" {
		s += "x-init-reserved: " + tok.InitArgs + "\n"
	}
	return s
}

// slotByLabel initialises tok.Module, finds the slot whose token is labelled
// tok.Label and releases the module again.
func slotByLabel(tb testing.TB, tok *Token) uint {
	tb.Helper()
	mod, err := acquire(tok)
	if err != nil {
		tb.Fatalf("lab: open %s: %v", tok.Module, err)
	}
	defer release(mod)
	slots, err := mod.ctx.GetSlotList(true)
	if err != nil {
		tb.Fatalf("lab: C_GetSlotList of %s: %v", tok.Module, err)
	}
	var labels []string
	for _, s := range slots {
		info, err := mod.ctx.GetTokenInfo(s)
		if err != nil {
			tb.Fatalf("lab: C_GetTokenInfo(slot %d) of %s: %v", s, tok.Module, err)
		}
		if info.Label == tok.Label {
			return s
		}
		labels = append(labels, fmt.Sprintf("%d:%q", s, info.Label))
	}
	tb.Fatalf("lab: %s has no token labelled %q (slots %s)", tok.Module, tok.Label, strings.Join(labels, ", "))
	return 0
}

// functionLists calls C_GetFunctionList of the module at path twice and
// returns the two lists it handed out.
func functionLists(path string) (a, b uintptr, err error) {
	cPath := C.CString(path)
	defer C.free(unsafe.Pointer(cPath))
	h := C.lab_dlopen(cPath)
	if h == nil {
		return 0, 0, fmt.Errorf("dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	defer C.dlclose(h)
	var l1, l2 unsafe.Pointer
	if rv := C.lab_get_function_list(h, &l1); rv != 0 {
		return 0, 0, fmt.Errorf("C_GetFunctionList: %#x", uint64(rv))
	}
	if rv := C.lab_get_function_list(h, &l2); rv != 0 {
		return 0, 0, fmt.Errorf("C_GetFunctionList: %#x", uint64(rv))
	}
	return uintptr(l1), uintptr(l2), nil
}

var serverAddress = regexp.MustCompile(`P11_KIT_SERVER_ADDRESS=([^;\s]+);`)

// Bounds of the waits for p11-kit server to listen and to stop.
const (
	rpcStartTimeout = 30 * time.Second
	rpcStopTimeout  = 10 * time.Second
)

// RPC starts "p11-kit server" in the foreground, serving tok.Module (with
// tok.Env in its environment) on a unix socket in a temporary directory, and
// returns a Token that reaches tok through p11-kit-client.so: Module is a
// copy of p11-kit-client.so in that directory (one lab module per server),
// InitArgs is tok.InitArgs (p11-kit-client.so forwards the C_Initialize
// pReserved string to the server, which hands it to the module), SlotID the
// slot of tok.Label as the client sees it, and Env
// P11_KIT_SERVER_ADDRESS=unix:path=....
//
// p11-kit-client.so reads P11_KIT_SERVER_ADDRESS in C_GetFunctionList
// (pkcs11.New), not in C_Initialize: Open sets it around both; code under
// test that loads the Module in process needs Token.Setenv before pkcs11.New.
// The server forks a "p11-kit remote" process per connection, which loads
// its own instance of the module. The server and its children are killed,
// and waited for, when the test ends.
func RPC(tb testing.TB, tok *Token) *Token {
	tb.Helper()
	skipIfAsked(tb)
	p11kit := lookTool(tb, "p11-kit", "p11-kit")
	client := findModule(tb, "p11-kit-modules", clientCandidates())
	// Not t.TempDir: a unix socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "p11kit-rpc-")
	if err != nil {
		tb.Fatalf("lab: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	if len(sock) >= 100 {
		tb.Fatalf("lab: socket path %s is too long for a unix socket (set TMPDIR to a shorter directory)", sock)
	}
	module := filepath.Join(dir, "p11-kit-client.so")
	if err := CopyFile(client, module); err != nil {
		tb.Fatalf("lab: copy p11-kit-client.so: %v", err)
	}

	srv := startRPCServer(tb, p11kit, sock, dir, tok)
	tb.Cleanup(srv.stop)
	rpcPIDs.Store(module, srv.cmd.Process.Pid)
	tb.Cleanup(func() { rpcPIDs.Delete(module) })
	addr := srv.address()

	rt := &Token{
		Kind:     tok.Kind,
		Module:   module,
		InitArgs: tok.InitArgs,
		Label:    tok.Label,
		Login:    tok.Login,
		PIN:      tok.PIN,
		SOPIN:    tok.SOPIN,
		Dir:      tok.Dir,
		Env:      []string{"P11_KIT_SERVER_ADDRESS=" + addr},
	}
	rt.SlotID = slotByLabel(tb, rt)
	return rt
}

// rpcServer is a running 'p11-kit server'.
type rpcServer struct {
	tb      testing.TB
	cmd     *exec.Cmd
	stdout  io.Reader
	stderr  LockedBuffer
	exited  chan struct{} // closed once it exited
	waitErr error         // how it exited, once exited is closed
}

// startRPCServer starts 'p11-kit server' serving tok's module on sock.
func startRPCServer(tb testing.TB, p11kit, sock, dir string, tok *Token) *rpcServer {
	tb.Helper()
	s := &rpcServer{tb: tb, exited: make(chan struct{})}
	cmd := exec.Command(p11kit, "server", "--foreground", "--name", sock, tok.Module)
	cmd.Env = append(os.Environ(), tok.Env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its "p11-kit remote" children too
	cmd.Stderr = &s.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatalf("lab: %v", err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("lab: start p11-kit server: %v", err)
	}
	s.cmd, s.stdout = cmd, stdout
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return s
}

// stop ends the server, and fails the test if a client was still
// connected.
func (s *rpcServer) stop() {
	pid := s.cmd.Process.Pid
	// Each connection has a "p11-kit remote" child, which exits when
	// its client disconnects (C_Finalize) and which the server reaps.
	// Killed with the server, it would be left to init to reap.
	quiet := waitNoChildren(pid, rpcStopTimeout)
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(rpcStopTimeout):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-s.exited
	}
	if !quiet {
		// A client is still connected: kill its child too.
		syscall.Kill(-pid, syscall.SIGKILL)
		s.tb.Errorf("lab: p11-kit server %d still had a client connected when the test ended (a session or module left open?)", pid)
	}
}

// address waits for the server to listen and returns the address it
// printed.
func (s *rpcServer) address() string {
	tb := s.tb
	tb.Helper()
	// The server prints its address after it listens on the socket.
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(s.stdout)
		sent := false
		for sc.Scan() {
			if !sent {
				lines <- sc.Text()
				sent = true
			}
		}
		if !sent {
			close(lines)
		}
	}()
	var line string
	select {
	case l, ok := <-lines:
		if !ok {
			<-s.exited
			tb.Fatalf("lab: p11-kit server exited before listening: %v\n%s", s.waitErr, s.stderr.String())
		}
		line = l
	case <-time.After(rpcStartTimeout):
		tb.Fatalf("lab: p11-kit server did not listen within %v\n%s", rpcStartTimeout, s.stderr.String())
	}
	m := serverAddress.FindStringSubmatch(line)
	if m == nil {
		tb.Fatalf("lab: p11-kit server printed %q, not its address", line)
	}
	return m[1]
}

// rpcPIDs maps the Module of an RPC token to the process ID (and process
// group ID) of its server, for tests of the rig itself.
var rpcPIDs sync.Map // string → int

// waitNoChildren waits, at most timeout, until process pid has no child
// process (not even an unreaped one), and reports whether it got there.
func waitNoChildren(pid int, timeout time.Duration) bool {
	path := fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// LockedBuffer is a bytes.Buffer safe for several writers and a reader
// (the writer goroutine of exec; a slog handler used by several
// goroutines).
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proxyModuleFile returns the p11-kit module file Proxy wrote for pt.
func proxyModuleFile(pt *Token) (string, error) {
	v, ok := proxyInfo.Load(pt.Module)
	if !ok {
		return "", errors.New("not a Proxy token")
	}
	return v.(proxyFiles).moduleFile, nil
}

// rpcServerPID returns the process ID of the server of rt, made by RPC.
func rpcServerPID(rt *Token) (int, bool) {
	v, ok := rpcPIDs.Load(rt.Module)
	if !ok {
		return 0, false
	}
	return v.(int), true
}

// encryptDataParams returns CK_KEY_DERIVATION_STRING_DATA for data (the
// parameter of CKM_*_ENCRYPT_DATA) as the bytes github.com/miekg/pkcs11
// passes on: pData points to a C copy of data, freed by free.
func encryptDataParams(data []byte) (params []byte, free func()) {
	p := C.CBytes(data)
	params = make([]byte, 2*unsafe.Sizeof(uintptr(0)))
	*(*uintptr)(unsafe.Pointer(&params[0])) = uintptr(p)
	*(*uintptr)(unsafe.Pointer(&params[unsafe.Sizeof(uintptr(0))])) = uintptr(len(data))
	return params, func() { C.free(p) }
}
