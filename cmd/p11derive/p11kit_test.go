package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

// cliTarget is a module the command is run on, in process.
type cliTarget struct {
	name string
	tok  *lab.Token
}

// cli runs the command in process on target, with target's module, init
// arguments and PIN in the environment, and returns its stdout; it fails
// the test on a non-zero exit status.
func cli(t *testing.T, target cliTarget, args ...string) string {
	t.Helper()
	out, errOut, code := cliRun(t, target, args...)
	require.Equal(t, 0, code, "%s: p11derive %s: %s", target.name, strings.Join(args, " "), errOut)
	return out
}

func cliRun(t *testing.T, target cliTarget, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	t.Setenv("P11DERIVE_MODULE", target.tok.Module)
	t.Setenv("P11DERIVE_INIT_ARGS", target.tok.InitArgs)
	pin := ""
	if target.tok.Login {
		pin = target.tok.PIN
	}
	t.Setenv("P11DERIVE_PIN", pin)
	n := 1 // the command, and the scheme's name
	if args[0] == "scheme" {
		n = 2
	}
	args = append(args[:n:n], append([]string{"--slot", strconv.FormatUint(uint64(target.tok.SlotID), 10)}, args[n:]...)...)
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

var (
	kcvField      = regexp.MustCompile(`"kcv": "([0-9a-f]{6})"`)
	strategyField = regexp.MustCompile(`"strategy": "([a-z-]+)"`)
)

func field(t *testing.T, re *regexp.Regexp, out string) string {
	t.Helper()
	m := re.FindStringSubmatch(out)
	require.NotNil(t, m, "no %s in %s", re, out)
	return m[1]
}

// TestCLIThroughProxy runs the command in process through p11-kit-proxy.so
// (a subprocess, as root, cannot use the proxy: p11-kit ignores user
// configuration then) and with the module loaded directly, on a fresh
// SoftHSM2 token and on NSS softoken's key database slot: kcv, derive,
// keygen, probe, batch and scheme give the same check values, strategies,
// probe verdicts and wrapped keys both ways, and the known answers. Keys
// made one way are used the other way (token objects of the one instance
// both reach).
func TestCLIThroughProxy(t *testing.T) {
	for _, c := range []struct {
		kind string
		make func(t *testing.T) *lab.Token
	}{
		{"softhsm2", func(t *testing.T) *lab.Token { return lab.SoftHSM2(t) }},
		{"nssdb", func(t *testing.T) *lab.Token { return lab.NSSDB(t) }},
	} {
		t.Run(c.kind, func(t *testing.T) {
			l := c.make(t)
			pt := lab.Proxy(t, l)
			pt.Setenv(t)
			direct, proxy := cliTarget{"direct", l}, cliTarget{"proxy", pt}
			both := []cliTarget{direct, proxy}
			k := lab.UniqueLabel("p11kit-" + c.kind)

			// Base keys of published value, token objects made through
			// the API on the direct module; destroyed at the end.
			admin := openAdmin(t, l)
			ctx := context.Background()
			var made []string
			t.Cleanup(func() {
				for _, label := range made {
					if key, err := admin.FindKey(ctx, label); err == nil {
						admin.Destroy(ctx, key)
					}
				}
			})
			imp := func(label string, kt derive.KeyType, hexValue string) {
				_, err := admin.Import(ctx, derive.KeySpec{Label: label, Type: kt, Persistent: true,
					Usage: derive.UseDerive | derive.UseEncrypt | derive.UseSign | derive.UseUnwrap}, unhex(t, hexValue))
				require.NoError(t, err)
				made = append(made, label)
			}
			imp(k+"-aes", derive.KeyAES128, "2b7e151628aed2a6abf7158809cf4f3c")
			imp(k+"-imk", derive.KeyDES2, "0123456789ABCDEFFEDCBA9876543210")

			// kcv and derive: SP 800-38A's key and F.1.1.
			for _, tg := range both {
				assert.Equal(t, "7df76b\n", cli(t, tg, "kcv", "--key", k+"-aes"), tg.name)
			}
			var strategies []string
			for _, tg := range both {
				out := cli(t, tg, "derive", "--base", k+"-aes", "--kdf", "aes-ecb", "--data", "6bc1bee22e409f96e93d7e117393172a", "--key-type", "aes", "--len", "16")
				assert.Equal(t, "6d60f8", field(t, kcvField, out), tg.name)
				strategies = append(strategies, field(t, strategyField, out))
				out = cli(t, tg, "derive", "--base", k+"-aes", "--kdf", "aes-cbc", "--iv", "000102030405060708090a0b0c0d0e0f",
					"--data", "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51", "--key-type", "aes", "--len", "32")
				assert.Equal(t, "d008aa", field(t, kcvField, out), tg.name)
			}
			assert.Equal(t, strategies[0], strategies[1], "Auto picks the same strategy through the proxy")

			// keygen through the proxy; the direct module finds the key and
			// agrees on its check value, and the other way round.
			for i, tg := range both {
				label := fmt.Sprintf("%s-gen-%s", k, tg.name)
				made = append(made, label)
				out := cli(t, tg, "keygen", "--label", label, "--key-type", "aes", "--len", "32", "--usage", "wrap,unwrap,encrypt,derive")
				kcv := field(t, kcvField, out)
				other := both[1-i]
				assert.Equal(t, kcv+"\n", cli(t, other, "kcv", "--key", label), "%s's key seen by %s", tg.name, other.name)
			}

			// scheme: EMV option A's published master key (c64dc2).
			for _, tg := range both {
				out := cli(t, tg, "scheme", "emv-mk", "--base", k+"-imk", "--pan", "12345678901234567", "--psn", "01", "--usage", "derive,encrypt")
				assert.Equal(t, "c64dc2", field(t, kcvField, out), tg.name)
			}

			// batch, wrap mode under the key keygen made directly: the same
			// file both ways (RFC 3394 is deterministic).
			dir := t.TempDir()
			in := filepath.Join(dir, "in.csv")
			require.NoError(t, os.WriteFile(in, []byte("id,data\na,6bc1bee22e409f96e93d7e117393172a\nb,ae2d8a571e03ac9c9eb76fac45af8e51\n"), 0o600))
			var files []string
			for _, tg := range both {
				outFile := filepath.Join(dir, tg.name+".csv")
				cli(t, tg, "batch", "--base", k+"-aes", "--kdf", "aes-ecb", "--key-type", "aes", "--len", "16",
					"--input", in, "--output", outFile, "--wrap-key", k+"-gen-direct", "--workers", "2")
				b, err := os.ReadFile(outFile)
				require.NoError(t, err)
				// The manifest line aside, whose run tag is random.
				_, rows, _ := strings.Cut(string(b), "\n")
				files = append(files, rows)
			}
			assert.Equal(t, files[0], files[1])
			assert.Regexp(t, `(?m)^a,[0-9a-f]{48},6d60f8,[a-z-]+,aes-ecb$`, files[1])
			assert.Regexp(t, `(?m)^b,[0-9a-f]{48},2fa506,[a-z-]+,aes-ecb$`, files[1])

			// batch --scheme, wrap mode: EMV option A's published master
			// key (c64dc2) for its row, the same file both ways.
			sin := filepath.Join(dir, "cards.csv")
			require.NoError(t, os.WriteFile(sin, []byte("id,pan,psn\ncard,12345678901234567,01\n"), 0o600))
			files = files[:0]
			for _, tg := range both {
				outFile := filepath.Join(dir, tg.name+"-cards.csv")
				cli(t, tg, "batch", "--scheme", "emv-mk", "--base", k+"-imk", "--input", sin, "--output", outFile,
					"--wrap-key", k+"-gen-direct")
				b, err := os.ReadFile(outFile)
				require.NoError(t, err)
				_, rows, _ := strings.Cut(string(b), "\n")
				files = append(files, rows)
			}
			assert.Equal(t, files[0], files[1])
			assert.Regexp(t, `(?m)^card,[0-9a-f]{48},c64dc2,[a-z-]+,[a-z0-9-]+$`, files[1])

			// probe: the same verdicts both ways.
			var verdicts []map[string]string
			for _, tg := range both {
				out := cli(t, tg, "probe", "--json", "--runs", "1", "--kdf", "aes-ecb,aes-cbc,des3-ecb,aes-ecb-decrypt")
				var rep struct {
					Results []struct{ KDF, Strategy, Status, CKR string }
				}
				require.NoError(t, json.Unmarshal([]byte(out), &rep))
				v := map[string]string{}
				for _, r := range rep.Results {
					v[r.KDF+"/"+r.Strategy] = r.Status + " " + r.CKR
				}
				verdicts = append(verdicts, v)
			}
			assert.Equal(t, verdicts[0], verdicts[1])
			assert.Contains(t, verdicts[1]["aes-ecb/native"], "verified")
			t.Logf("probe verdicts through the proxy: %v", verdicts[1])
		})
	}
}

// openAdmin opens a Token on the lab token's own module, for the test's
// own keys.
func openAdmin(t *testing.T, l *lab.Token) *derive.Token {
	t.Helper()
	cfg := derive.Config{Module: l.Module, InitArgs: l.InitArgs, Slot: &l.SlotID}
	if l.Login {
		cfg.PIN = l.PIN
	}
	tok, err := derive.Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return tok
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	_, err := fmt.Sscanf(s, "%x", &b)
	require.NoError(t, err)
	return b
}
