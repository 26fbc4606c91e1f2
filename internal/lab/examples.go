package lab

import (
	"flag"
	"fmt"
	"os"
)

// The environment variables through which MainExamples hands its token to
// a package's Example functions: the ones the p11derive command reads, and
// the token's label.
const (
	ExampleModuleEnv = "P11DERIVE_MODULE"
	ExampleTokenEnv  = "P11DERIVE_TOKEN"
	ExamplePINEnv    = "P11DERIVE_PIN"
	// ExampleLabel is the label of the examples' token.
	ExampleLabel = "example"
)

// ExampleInit says whether MainExamples initialises the examples' module
// before the tests run.
type ExampleInit bool

const (
	// InitNow initialises the module at once, with the token's
	// SOFTHSM2_CONF, and keeps it initialised until Main returns: the
	// examples then reach the right token whatever SOFTHSM2_CONF says when
	// they run (SharedSoftHSM2 sets it for good). For examples of code
	// that accepts CKR_CRYPTOKI_ALREADY_INITIALIZED (p11derive does).
	InitNow ExampleInit = true
	// InitByExamples leaves the module uninitialised, for examples of code
	// that must initialise it itself (crypto11 refuses a module someone
	// else initialised), and sets the token's SOFTHSM2_CONF in the process
	// environment for good. The test binary must then make no other
	// SoftHSM2 token that sets it for good (SharedSoftHSM2); tests that
	// use SoftHSM2 with Setenv restore it when they end.
	InitByExamples ExampleInit = false
)

// MainExamples is Main for a test binary whose Example functions need a
// token: Example functions take no testing.TB and so cannot ask for a lab
// token themselves. Before the tests, it makes a fresh SoftHSM2 token of
// its own, labelled ExampleLabel, with a copy of libsofthsm2.so of its
// own, and sets P11DERIVE_MODULE, P11DERIVE_TOKEN and P11DERIVE_PIN in the
// process environment, which the examples read as a program reads its
// configuration. The token is removed when the binary ends. Call it from
// TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(lab.MainExamples(m, lab.InitNow)) }
//
// With P11DERIVE_LAB_SKIP=1 it makes no token and skips the Example
// functions (-test.skip), as the lab's other tests are skipped.
func MainExamples(m interface{ Run() int }, init ExampleInit) int {
	if os.Getenv(SkipEnv) == "1" {
		if !flag.Parsed() {
			flag.Parse()
		}
		skip := "^Example"
		if f := flag.Lookup("test.skip"); f != nil {
			if cur := f.Value.String(); cur != "" {
				skip = cur + "|" + skip
			}
			f.Value.Set(skip)
		}
		return Main(m)
	}
	dir, err := os.MkdirTemp("", "p11derive-lab-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	tok := newSoftHSM2(exitFataler{}, dir, []Option{TokenLabel(ExampleLabel)})
	if init == InitNow {
		tok.shared = true // kept initialised until Main's cleanup
		if _, err := acquire(tok); err != nil {
			fmt.Fprintf(os.Stderr, "lab: initialise the examples' module %s: %v\n", tok.Module, err)
			return 1
		}
	} else {
		setenv(tok.Env) // for good
	}
	os.Setenv(ExampleModuleEnv, tok.Module)
	os.Setenv(ExampleTokenEnv, tok.Label)
	os.Setenv(ExamplePINEnv, tok.PIN)
	return Main(m)
}

// exitFataler is a Fataler outside any test: it reports on stderr and
// exits (a token maker goes on after a Fatalf that returns).
type exitFataler struct{}

func (exitFataler) Helper() {}

func (exitFataler) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}
