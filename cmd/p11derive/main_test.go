package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

// labM runs the tests inside lab.Main, which removes the lab's shared
// tokens when they end.
type labM struct{ m *testing.M }

func (l labM) Run() int { return lab.Main(l.m) }

func TestMain(m *testing.M) {
	testscript.Main(labM{m}, map[string]func(){
		"p11derive": func() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) },
		// testkey LABEL aes|des2|des3 HEX imports a known base key as a token
		// object, for known-answer tests. It is test-only: the command has
		// no way to import a key in the clear, and should not.
		"testkey": func() { os.Exit(testkey(os.Args[1:])) },
	})
}

func testkey(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: testkey LABEL aes|des2|des3 HEX")
		return 2
	}
	ckk := map[string]uint{"aes": pkcs11.CKK_AES, "des2": pkcs11.CKK_DES2, "des3": pkcs11.CKK_DES3}[args[1]]
	value, err := hex.DecodeString(args[2])
	if ckk == 0 || err != nil {
		fmt.Fprintln(os.Stderr, "testkey: bad type or value")
		return 2
	}
	slot, _ := strconv.ParseUint(os.Getenv("SLOT"), 10, 0)
	s := uint(slot)
	tok, err := derive.Open(derive.Config{Module: os.Getenv("P11DERIVE_MODULE"), InitArgs: os.Getenv("P11DERIVE_INIT_ARGS"),
		Slot: &s, PIN: os.Getenv("P11DERIVE_PIN")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer tok.Close()
	err = tok.WithSession(func(ctx *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		_, err := ctx.CreateObject(sh, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckk),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, args[0]),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
			pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		})
		return err
	})
	if err == nil {
		_, err = tok.FindKey(context.Background(), args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
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
					env.Setenv("P11DERIVE_MODULE", tok.Module)
					env.Setenv("P11DERIVE_INIT_ARGS", tok.InitArgs)
					env.Setenv("SLOT", strconv.FormatUint(uint64(tok.SlotID), 10))
					env.Setenv("TOKEN_KIND", tok.Kind)
					// A prefix for labels unique to this run of this script: the
					// scripts, and every run of them (-count=N), share the token.
					env.Setenv("K", lab.UniqueLabel(tok.Kind))
					if tok.Login {
						env.Setenv("P11DERIVE_PIN", tok.PIN)
					}
					for _, kv := range tok.Env {
						k, v, _ := strings.Cut(kv, "=")
						env.Setenv(k, v)
					}
					env.Setenv("GORACE", "atexit_sleep_ms=0")
					return nil
				},
				Condition: func(cond string) (bool, error) {
					switch cond {
					case "softhsm2", "nss":
						return cond == kind, nil
					}
					return false, fmt.Errorf("unknown condition %q", cond)
				},
			})
		})
	}
}

// fataler adapts testscript's T to lab.Fataler.
type fataler struct{ t testscript.T }

func (fataler) Helper() {}

func (f fataler) Fatalf(format string, args ...any) { f.t.Fatal(fmt.Sprintf(format, args...)) }
