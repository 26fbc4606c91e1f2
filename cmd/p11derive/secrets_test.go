package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// The secrets of TestCommandPrintsNoSecrets: a PIN and a base key nobody
// would write by chance.
const cliPIN = "S3cr3t-CLI-PIN-9d41"

var cliKey = lab.Unhex("5ec2e7c0ffee4b1dd00dfeedfacecafe0badc0de5ec2e7c0ffee4b1d1234abcd")

// forms are the ways a secret could be printed: raw, hex in either case,
// base64; for keys, every 8-byte piece as well.
func forms(b []byte) []string {
	pieces := [][]byte{b}
	for i := 0; len(b) >= 16 && i+8 <= len(b); i += 8 {
		pieces = append(pieces, b[i:i+8])
	}
	var out []string
	for _, p := range pieces {
		out = append(out, string(p), hex.EncodeToString(p), strings.ToUpper(hex.EncodeToString(p)), base64.StdEncoding.EncodeToString(p))
	}
	return out
}

// TestCommandPrintsNoSecrets runs the p11derive command, as a process, on
// a SoftHSM2 token whose PIN and base key are distinctive: derive (JSON,
// and a profile file), kcv (and --json), keygen, batch (its CSV output),
// keys (table and JSON), the probe's key report, destroy, and the
// failures — a wrong PIN, a PIN in a URI, a strategy the token refuses, a
// missing key, bad flags; then on NSS softoken with every strategy. Every
// command runs with --log-level debug, so stderr holds everything the
// logger records too. Neither stdout, stderr nor the files written hold the PIN, the base key,
// any DK (computed by the software reference) or what mac-unwrap and
// cmac-unwrap compute on the way, in raw, hex (both cases) or base64.
func TestCommandPrintsNoSecrets(t *testing.T) {
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		if os.Getenv(lab.SkipEnv) == "1" {
			t.Skipf("pkcs11-tool not found (%s=1)", lab.SkipEnv)
		}
		t.Fatalf("pkcs11-tool not found: install the Debian package opensc (or set %s=1 to skip lab tests)", lab.SkipEnv)
	}
	tok := lab.SoftHSM2(t)
	dir := t.TempDir()
	env := append(os.Environ(), tok.Env...)
	env = append(env, "P11DERIVE_MODULE="+tok.Module, "P11DERIVE_INIT_ARGS=", "SLOT="+strconv.FormatUint(uint64(tok.SlotID), 10),
		"P11DERIVE_PIN="+cliPIN, "GORACE=atexit_sleep_ms=0")
	slot := strconv.FormatUint(uint64(tok.SlotID), 10)
	run := func(name string, args ...string) (stdout, stderr string, err error) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		cmd.Dir = dir
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}
	// The token's PIN becomes the distinctive one.
	_, stderr, err := run("pkcs11-tool", "--module", tok.Module, "--slot", slot, "--login", "--pin", tok.PIN, "--change-pin", "--new-pin", cliPIN)
	require.NoError(t, err, stderr)
	_, stderr, err = run("testkey", "secret-base", "aes", hex.EncodeToString(cliKey))
	require.NoError(t, err, stderr)

	block, err := aes.NewCipher(cliKey)
	require.NoError(t, err)
	secrets := map[string][]byte{"the PIN": []byte(cliPIN), "the wrong PIN": []byte("wrong-" + cliPIN), "the base key": cliKey}
	iv := lab.Unhex("0f0e0d0c0b0a09080706050403020100")
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
	dk := make([]byte, 32)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(dk, data)
	secrets["DK (aes-cbc)"] = dk
	kcv := make([]byte, 16)
	cipher.NewCBCEncrypter(mustBlock(t, dk), make([]byte, 16)).CryptBlocks(kcv, make([]byte, 16))

	// Batch rows: DK = E_K(data) of each.
	rows := [][]byte{lab.Unhex("00112233445566778899aabbccddeeff"), lab.Unhex("ffeeddccbbaa99887766554433221100")}
	csv := "id,data\n"
	for i, d := range rows {
		out := make([]byte, 16)
		block.Encrypt(out, d)
		secrets[fmt.Sprintf("DK of batch row %d", i)] = out
		csv += fmt.Sprintf("r%d,%x\n", i, d)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in.csv"), []byte(csv), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "pin.txt"), []byte(cliPIN+"\n"), 0o600))

	var texts []string
	type step struct {
		args []string
		ok   bool
		env  []string
	}
	derive := []string{"derive", "--slot", slot, "--base", "secret-base", "--kdf", "aes-cbc", "--iv", hex.EncodeToString(iv),
		"--data", hex.EncodeToString(data), "--key-type", "aes", "--len", "32"}
	steps := []step{
		{append(derive, "--profile-out", "profile.json"), true, nil},
		{append(derive, "--label", "secret-dk", "--token-object"), true, nil},
		{[]string{"derive", "--slot", slot, "--base", "secret-base", "--profile-in", "profile.json", "--data", hex.EncodeToString(data)}, true, nil},
		{append(derive, "--strategy", "mac-unwrap"), false, nil},
		{append(derive, "--strategy", "cmac-unwrap"), false, nil},
		{[]string{"kcv", "--slot", slot, "--key", "secret-base"}, true, nil},
		{[]string{"kcv", "--slot", slot, "--key", "secret-dk", "--pin-file", "pin.txt", "--pin-env", ""}, true, nil},
		{[]string{"keygen", "--slot", slot, "--label", "secret-gen", "--key-type", "aes", "--len", "32", "--session"}, true, nil},
		{[]string{"batch", "--slot", slot, "--base", "secret-base", "--kdf", "aes-ecb", "--key-type", "aes", "--len", "16",
			"--strategy", "native", "--input", "in.csv", "--output", "out.csv", "--label-template", "secret-row-{id}"}, true, nil},
		{[]string{"keys", "--slot", slot}, true, nil},
		{[]string{"keys", "--slot", slot, "--json", "--kcv", "cmac"}, true, nil},
		{[]string{"kcv", "--slot", slot, "--key", "secret-dk", "--json"}, true, nil},
		{[]string{"probe", "--slot", slot, "--list-only", "--kdf", "aes-ecb", "--key", "secret-base", "--json"}, true, nil},
		{[]string{"destroy", "--slot", slot, "--key", "secret-dk"}, false, nil},
		{[]string{"destroy", "--slot", slot, "--key", "secret-dk", "--yes", "--json"}, true, nil},
		{[]string{"kcv", "--slot", slot, "--key", "secret-base"}, false, []string{"P11DERIVE_PIN=wrong-" + cliPIN}},
		{[]string{"kcv", "--uri", "pkcs11:slot-id=" + slot + "?pin-value=" + cliPIN, "--key", "secret-base"}, false, nil},
		{[]string{"kcv", "--uri", "pkcs11:slot-id=" + slot + ";pin-value=" + cliPIN, "--key", "secret-base"}, false, nil},
		{[]string{"kcv", "--slot", slot, "--key", "no-such-key"}, false, nil},
		{append(slices.Clone(derive[:len(derive)-6]), "--data", hex.EncodeToString(dk[:17]), "--key-type", "aes", "--len", "32"), false, nil},
		{append(derive, "--kdf", "frob"), false, nil},
	}
	for _, s := range steps {
		saved := env
		env = append(env, s.env...)
		stdout, stderr, err := run("p11derive", append(slices.Clone(s.args), "--log-level", "debug")...)
		env = saved
		if s.ok {
			require.NoError(t, err, "p11derive %s: %s", strings.Join(s.args, " "), stderr)
		} else {
			require.Error(t, err, "p11derive %s", strings.Join(s.args, " "))
			t.Logf("p11derive %s: %s", s.args[0], strings.TrimSpace(stderr))
		}
		texts = append(texts, stdout, stderr)
	}
	for _, f := range []string{"profile.json", "out.csv"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		texts = append(texts, string(b))
	}
	// The derivation did happen: DK's check value, computed in the token,
	// is the reference's; and the logger recorded it, the login and the
	// failures.
	assert.Contains(t, texts[0], `"kcv": "`+hex.EncodeToString(kcv[:3])+`"`)
	logs := strings.Join(texts, "\n")
	for _, rec := range []string{`level=INFO msg="p11derive: token opened"`, `level=DEBUG msg="p11derive: logged in"`,
		`level=DEBUG msg="p11derive: derived" base=secret-base function=aes-cbc`, `level=WARN msg="p11derive: derivation failed"`,
		`level=WARN msg="p11derive: open failed"`} {
		assert.Contains(t, logs, rec)
	}

	// NSS softoken's key database: mac-unwrap and cmac-unwrap, which put
	// E_K(c_i) and L = E_K(0) in the process's memory, print none of them.
	nss := lab.NSSDB(t)
	env = append(os.Environ(), nss.Env...)
	env = append(env, "P11DERIVE_MODULE="+nss.Module, "P11DERIVE_INIT_ARGS="+nss.InitArgs,
		"SLOT="+strconv.FormatUint(uint64(nss.SlotID), 10), "P11DERIVE_PIN=", "GORACE=atexit_sleep_ms=0")
	label := lab.UniqueLabel("secret-base")
	_, stderr, err = run("testkey", label, "aes", hex.EncodeToString(cliKey))
	require.NoError(t, err, stderr)
	nslot := strconv.FormatUint(uint64(nss.SlotID), 10)
	for i := 0; i < 2; i++ {
		w := make([]byte, 16)
		block.Encrypt(w, dk[16*i:16*(i+1)])
		secrets[fmt.Sprintf("w_%d = E_K(c_%d)", i+1, i+1)] = w
	}
	l := make([]byte, 16)
	block.Encrypt(l, l)
	secrets["L = E_K(0)"] = l
	for _, st := range []string{"native", "mac-unwrap", "cmac-unwrap"} {
		stdout, stderr, err := run("p11derive", "derive", "--slot", nslot, "--base", label, "--kdf", "aes-cbc", "--iv", hex.EncodeToString(iv),
			"--data", hex.EncodeToString(data), "--key-type", "aes", "--len", "32", "--strategy", st, "--log-level", "debug")
		require.NoError(t, err, stderr)
		assert.Contains(t, stdout, `"kcv": "`+hex.EncodeToString(kcv[:3])+`"`)
		assert.Contains(t, stdout, `"strategy": "`+st+`"`)
		texts = append(texts, stdout, stderr)
	}

	for name, s := range secrets {
		for _, form := range forms(s) {
			for i, text := range texts {
				if strings.Contains(text, form) {
					t.Errorf("%s (%q) is in output %d: %s", name, form, i, text)
				}
			}
		}
	}
	t.Logf("%d outputs (stdout, stderr, files) of %d commands hold none of %d secrets", len(texts), len(steps)+3, len(secrets))
}

func mustBlock(t *testing.T, key []byte) cipher.Block {
	b, err := aes.NewCipher(key)
	require.NoError(t, err)
	return b
}
