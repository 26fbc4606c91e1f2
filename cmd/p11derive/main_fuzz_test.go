package main

import (
	"bytes"
	"net/url"
	"os"
	"strings"
	"testing"
)

// fuzzPIN is the PIN in the environment while the command line is fuzzed:
// it must never be printed.
const fuzzPIN = "Zq8-PIN-7c1e"

// touchesModules reports whether a command-line argument could name a
// PKCS#11 module or a device file: --module, a URI's module-path, /dev/...
// (also percent-encoded). The fuzzer must not load real modules (tokens
// would be touched) or read endless devices.
func touchesModules(arg string) bool {
	s := arg
	for i := 0; i < 3; i++ {
		if u, err := url.PathUnescape(s); err == nil {
			s = u
		}
	}
	s = strings.ToLower(s)
	return strings.Contains(s, "module") || strings.Contains(s, "/dev/") || strings.Contains(s, "/proc/") || strings.Contains(s, "/sys/")
}

// asksHelp reports whether arg is a help flag, which the flag package
// answers by printing to the process's stdout.
func asksHelp(arg string) bool {
	if !strings.HasPrefix(arg, "-") {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name == "h" || name == "help"
}

// FuzzRun runs the command with arbitrary arguments (one per line): it must
// never panic, must exit 0, 1 (a failure, one line on stderr) or 2 (a bad
// command line), and must never print the PIN. No token is reached: the
// module in the environment does not exist, and arguments that could name
// another are left out.
func FuzzRun(f *testing.F) {
	f.Setenv("P11DERIVE_MODULE", "/nonexistent/p11derive-fuzz/none.so")
	f.Setenv("P11DERIVE_INIT_ARGS", "")
	f.Setenv("P11DERIVE_PIN", fuzzPIN)
	if devnull, err := os.Open(os.DevNull); err == nil {
		stdin := os.Stdin
		os.Stdin = devnull // batch --input - reads it
		f.Cleanup(func() { os.Stdin = stdin; devnull.Close() })
	}
	for _, s := range []string{
		"",
		"help",
		"derive\n--token\npay\n--base\nK\n--kdf\naes-ecb\n--data\n00112233445566778899aabbccddeeff\n--key-type\naes\n--len\n16",
		"derive\n--uri\npkcs11:token=pay;serial=0042\n--base\nK\n--kdf\naes-cbc\n--iv\n000102030405060708090a0b0c0d0e0f\n--data\n00\n--key-type\naes\n--len\n16",
		"derive\n--base=K\n--kdf=sp800-108-counter\n--prf=aes-cmac\n--layout=hex:01,counter:8,data\n--data=00\n--key-type=generic\n--len=48\n--strategy=native",
		"derive\n--base\nK\n--kdf\nhkdf\n--info\n00\n--data\n00",
		"derive\n--base\nK\n--profile-in\ntestdata/nonexistent.json\n--data\n00",
		"derive\n--base\nK\n--kdf\naes-ecb\n--allow\naes-ecb-decrypt,sp800-108-counter\n--data\nzz\n--key-type\naes\n--len\n16",
		"derive\n--token-object\n--base\nK\n--kdf\naes-ecb\n--data\n00\n--key-type\naes\n--len\n16",
		"derive\n--slot\n-7\n--pin-env\nNOPE\n--base\nK\n--kdf\naes-ecb\n--data\n00\n--key-type\ndes9",
		"kcv\n--key\nK\n--pin-file\n/nonexistent/pin",
		"keygen\n--label\nK\n--key-type\ndes3\n--usage\nderive,sign,frobnicate",
		"keygen\n--label\nK\n--key-type\naes\n--len\n32\n--session",
		"batch\n--base\nK\n--kdf\naes-ecb\n--key-type\naes\n--len\n16\n--input\n-\n--output\nout.csv",
		"batch\n--base\nK\n--kdf\naes-ecb\n--key-type\naes\n--len\n16\n--input\nin.csv\n--output\nout.csv\n--wrap-key\nT\n--wrap-mech\nfrob",
		"probe\n--token\npay",
		"scheme",
		"frobnicate\n--x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var args []string
		if s != "" {
			args = strings.Split(s, "\n")
		}
		for _, a := range args {
			if touchesModules(a) || asksHelp(a) {
				return
			}
		}
		var stdout, stderr bytes.Buffer
		code := run(args, &stdout, &stderr)
		switch code {
		case 0, 2:
		case 1:
			if n := strings.Count(stderr.String(), "\n"); n != 1 || !strings.HasSuffix(stderr.String(), "\n") {
				t.Fatalf("exit 1 with %d lines on stderr: %q", n, stderr.String())
			}
		default:
			t.Fatalf("exit %d", code)
		}
		if !strings.Contains(s, fuzzPIN) && strings.Contains(stdout.String()+stderr.String(), fuzzPIN) {
			t.Fatalf("the PIN was printed:\n%s\n%s", stdout.String(), stderr.String())
		}
	})
}
