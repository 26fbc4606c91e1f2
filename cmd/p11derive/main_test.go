package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/miekg/pkcs11"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/p11derive/p11derive/internal/lab"
)

// labM runs the tests inside lab.Main, which removes the lab's shared
// tokens when they end.
type labM struct{ m *testing.M }

func (l labM) Run() int { return lab.Main(l.m) }

func TestMain(m *testing.M) {
	testscript.Main(labM{m}, map[string]func(){
		"p11derive": main,
		// testkey LABEL aes|des2|des3 HEX [ID] imports a known base key as a
		// token object (with CKA_ID ID, hex, if given), for known-answer tests. It is test-only: the command has
		// no way to import a key in the clear, and should not.
		"testkey": func() { os.Exit(testkey(os.Args[1:])) },
	})
}

func testkey(args []string) int {
	if len(args) != 3 && len(args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: testkey LABEL aes|des2|des3 HEX [ID]")
		return 2
	}
	ckk := map[string]uint{"aes": pkcs11.CKK_AES, "des2": pkcs11.CKK_DES2, "des3": pkcs11.CKK_DES3}[args[1]]
	value, err := hex.DecodeString(args[2])
	var id []byte
	if err == nil && len(args) == 4 {
		id, err = hex.DecodeString(args[3])
	}
	if ckk == 0 || err != nil {
		fmt.Fprintln(os.Stderr, "testkey: bad type, value or ID")
		return 2
	}
	if err := importTokenKey(args[0], ckk, value, id); err != nil {
		fmt.Fprintln(os.Stderr, "testkey:", err)
		return 1
	}
	return 0
}

// importTokenKey makes the test key through miekg/pkcs11, a test rig's
// own way to the module (SoftHSM2 and NSS give it the same function list):
// the command has no way to import a key in the clear, and p11derive's
// Import makes only sensitive keys, while the scripts need the token's
// defaults (a key the host may read, to see it warned about).
func importTokenKey(label string, ckk uint, value, id []byte) error {
	c := pkcs11.New(os.Getenv("P11DERIVE_MODULE"))
	if c == nil {
		return fmt.Errorf("cannot load %s", os.Getenv("P11DERIVE_MODULE"))
	}
	var opts []pkcs11.InitializeOption
	if a := os.Getenv("P11DERIVE_INIT_ARGS"); a != "" {
		args := append([]byte(a), 0)
		defer runtime.KeepAlive(args)
		opts = append(opts, pkcs11.InitializeWithReserved(unsafe.Pointer(&args[0])))
	}
	if err := c.Initialize(opts...); err != nil {
		return err
	}
	defer c.Finalize()
	slot, _ := strconv.ParseUint(os.Getenv("SLOT"), 10, 0)
	s, err := c.OpenSession(uint(slot), pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return err
	}
	if pin := os.Getenv("P11DERIVE_PIN"); pin != "" {
		if err := c.Login(s, pkcs11.CKU_USER, pin); err != nil {
			return err
		}
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
	}
	if len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	_, err = c.CreateObject(s, tmpl)
	return err
}

// TestScripts runs the scripts of testdata/ as separate processes, against
// a fresh SoftHSM2 token per script (SoftHSM2's file store does not take
// concurrent writers from several processes) and against NSS softoken's
// key-database slot, shared by the scripts.
func TestScripts(t *testing.T) {
	for _, kind := range []string{lab.KindSoftHSM2, lab.KindNSS} {
		t.Run(kind, func(t *testing.T) {
			var nss *lab.Token
			if kind == lab.KindNSS {
				nss = lab.NSSDB(t)
			}
			testscript.Run(t, testscript.Params{
				Dir: "testdata",
				Setup: func(env *testscript.Env) error {
					tok := nss
					if tok == nil {
						dir := filepath.Join(env.WorkDir, ".softhsm2")
						if err := os.Mkdir(dir, 0o700); err != nil {
							return err
						}
						tok = lab.SoftHSM2In(fataler{env.T()}, dir)
					}
					setupScript(env, tok, tok.Kind)
					return nil
				},
				Cmds:      scriptCmds,
				Condition: tokenCondition(kind),
			})
		})
	}
}

// TestScriptsRPC runs the scripts of testdata/rpc as separate processes
// through p11-kit's RPC (p11-kit-client.so and a "p11-kit server"
// serving a fresh SoftHSM2 token, or NSS softoken's key-database slot):
// each process, testkey's included, gets a connection and a "p11-kit
// remote" process of its own, so only token objects cross. One server per
// token kind, one script at a time on it (SoftHSM2's file store takes one
// writer at a time).
func TestScriptsRPC(t *testing.T) {
	for _, kind := range []string{lab.KindSoftHSM2, lab.KindNSS} {
		t.Run(kind, func(t *testing.T) {
			l := lab.NSSDB(t)
			if kind == lab.KindSoftHSM2 {
				l = lab.SoftHSM2(t)
			}
			rig := lab.RPC(t, l)
			testscript.Run(t, testscript.Params{
				Dir: filepath.Join("testdata", "rpc"),
				Setup: func(env *testscript.Env) error {
					setupScript(env, rig, "rpc-"+rig.Kind)
					return nil
				},
				Cmds:      scriptCmds,
				Condition: tokenCondition(kind),
			})
		})
	}
}

// setupScript gives a script the environment that reaches tok: the
// module, its init args, the slot, the PIN, the token's own environment,
// and K, a prefix for labels unique to this run of this script (the
// scripts, and every run of them with -count=N, share the token).
func setupScript(env *testscript.Env, tok *lab.Token, prefix string) {
	env.Setenv("P11DERIVE_MODULE", tok.Module)
	env.Setenv("P11DERIVE_INIT_ARGS", tok.InitArgs)
	env.Setenv("SLOT", strconv.FormatUint(uint64(tok.SlotID), 10))
	env.Setenv("TOKEN_KIND", tok.Kind)
	env.Setenv("TOKEN_DIR", tok.Dir) // NSS: the database directory (--nss-db)
	env.Setenv("K", lab.UniqueLabel(prefix))
	if tok.Login {
		env.Setenv("P11DERIVE_PIN", tok.PIN)
	}
	for _, kv := range tok.Env {
		k, v, _ := strings.Cut(kv, "=")
		env.Setenv(k, v)
	}
	env.Setenv("GORACE", "atexit_sleep_ms=0")
}

// tokenCondition answers the scripts' [softhsm2] and [nss] conditions.
func tokenCondition(kind string) func(cond string) (bool, error) {
	return func(cond string) (bool, error) {
		switch cond {
		case "softhsm2", "nss":
			return cond == kind, nil
		}
		return false, fmt.Errorf("unknown condition %q", cond)
	}
}

// scriptCmds are the scripts' own commands.
var scriptCmds = map[string]func(ts *testscript.TestScript, neg bool, args []string){"exits": exits, "hexenv": hexenv}

// hexenv [-pct] NAME STRING sets NAME to STRING in hex (with -pct,
// percent-encoded, every byte: %6b%2d...): CKA_IDs unique to a run of a
// script, made of its ${K} (the scripts share NSS's token).
func hexenv(ts *testscript.TestScript, neg bool, args []string) {
	pct := len(args) > 0 && args[0] == "-pct"
	if pct {
		args = args[1:]
	}
	if neg || len(args) != 2 {
		ts.Fatalf("usage: hexenv [-pct] NAME STRING")
	}
	v := hex.EncodeToString([]byte(args[1]))
	if pct {
		var b strings.Builder
		for i := 0; i < len(v); i += 2 {
			b.WriteString("%" + v[i:i+2])
		}
		v = b.String()
	}
	ts.Setenv(args[0], v)
}

// exits CODE COMMAND [ARGS...] runs the command like exec, and fails
// unless it exits with status CODE (stdout and stderr are kept for the
// next stdout/stderr checks).
func exits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: bad code %q", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exits: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// fataler adapts testscript's T to lab.Fataler.
type fataler struct{ t testscript.T }

func (fataler) Helper() {}

func (f fataler) Fatalf(format string, args ...any) { f.t.Fatal(fmt.Sprintf(format, args...)) }
