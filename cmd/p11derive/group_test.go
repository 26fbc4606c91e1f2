package main

import (
	"crypto/aes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/kwref"
	"github.com/p11derive/p11derive/internal/lab"
)

// secondSoftHSM2Token initialises a second token, labelled label, in the
// SoftHSM2 configuration of l (same module, same PIN): the two tokens of a
// subprocess, which reads one SOFTHSM2_CONF.
func secondSoftHSM2Token(t *testing.T, l *lab.Token, label string) *lab.Token {
	t.Helper()
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", l.SOPIN, "--pin", l.PIN)
	cmd.Env = append(os.Environ(), l.Env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	m := regexp.MustCompile(`reassigned to slot ([0-9]+)`).FindSubmatch(out)
	require.NotNil(t, m, "%s", out)
	slot, err := strconv.ParseUint(string(m[1]), 10, 0)
	require.NoError(t, err)
	l2 := *l
	l2.Label, l2.SlotID = label, uint(slot)
	return &l2
}

// groupEnv is the environment of a p11derive subprocess reaching the
// tokens of l's SoftHSM2 configuration by URIs that name their modules.
func groupEnv(l *lab.Token) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "P11DERIVE_") {
			env = append(env, kv)
		}
	}
	return append(append(env, l.Env...), "P11DERIVE_PIN="+l.PIN, "GORACE=atexit_sleep_ms=0")
}

// TestBatchGroup: batch with two --uri, two SoftHSM2 tokens holding the
// same K and T (token objects), the second reached through the forwarder,
// which answers CKR_DEVICE_REMOVED to every C_DeriveKey from its 11th on:
// the rows are spread over both, the second is taken out mid-batch and its
// rows derived on the first; every row is written once, with the right
// wrapped key and check value (software reference), the manifest holds
// the base key's check value and the tokens, and no DK is left on either
// token. Keep mode with two --uri is a usage error (exit 2); a token whose
// K differs is refused before any row, naming both tokens (exit 1).
func TestBatchGroup(t *testing.T) {
	a := lab.SoftHSM2(t)
	b := secondSoftHSM2Token(t, a, "second")
	c := secondSoftHSM2Token(t, a, "third") // made before the module is loaded here, which sees the slots of its C_Initialize
	kValue, tValue := make([]byte, 16), make([]byte, 16)
	rand.Read(kValue)
	rand.Read(tValue)
	token := pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true)
	count := map[*lab.Token]func() int{}
	for _, l := range []*lab.Token{a, b} {
		ctx, s := lab.Open(t, l)
		lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, kValue, "K", token)
		lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, tValue, "T", token, pkcs11.NewAttribute(pkcs11.CKA_WRAP, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true))
		count[l] = func() int { return lab.CountObjects(t, ctx, s) }
	}
	before := [2]int{count[a](), count[b]()}
	w := fwd.Wrap(t, b, fwd.Config{Faults: []fwd.Fault{{Func: "C_DeriveKey", N: 11, From: true, CKR: pkcs11.CKR_DEVICE_REMOVED}}})
	uriA := "pkcs11:token=" + a.Label + "?module-path=" + a.Module
	uriB := "pkcs11:token=" + b.Label + "?module-path=" + w.Module

	dir := t.TempDir()
	rows := writeInput(t, filepath.Join(dir, "in.csv"), 60)
	run := func(args ...string) *exec.Cmd {
		cmd := exec.Command("p11derive", args...)
		cmd.Env, cmd.Dir = groupEnv(a), dir
		return cmd
	}
	out := mustRun(t, run("batch", "--uri", uriA, "--uri", uriB, "--base", "K", "--kdf", "aes-ecb", "--key-type", "aes", "--len", "16",
		"--input", "in.csv", "--output", "out.csv", "--wrap-key", "T", "--workers", "4"))
	t.Log(out)
	assert.Contains(t, out, "60 rows read: 60 written, 0 failed")
	assert.Regexp(t, `tokens: token "p11derive-lab" \(serial "[0-9a-f]+", slot [0-9]+\): [0-9]+ derivations; token "second" \(serial "[0-9a-f]+", slot [0-9]+\): 10 derivations, out \(.*CKR_DEVICE_REMOVED\)`, out)

	recs := readOutput(t, filepath.Join(dir, "out.csv"))
	require.Len(t, recs, 60)
	kBlock, err := aes.NewCipher(kValue)
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, r := range recs {
		require.False(t, seen[r[0]], "row %s written twice", r[0])
		seen[r[0]] = true
		dk := make([]byte, 16)
		kBlock.Encrypt(dk, rows[r[0]])
		want, err := kwref.Wrap(tValue, kwref.IV, dk)
		require.NoError(t, err)
		assert.Equal(t, hex.EncodeToString(want), r[1], r[0])
		dkBlock, err := aes.NewCipher(dk)
		require.NoError(t, err)
		kcv := make([]byte, 16)
		dkBlock.Encrypt(kcv, make([]byte, 16))
		assert.Equal(t, hex.EncodeToString(kcv[:3]), r[2], r[0])
	}
	assert.Equal(t, before, [2]int{count[a](), count[b]()}, "no DK left on either token")

	head, err := os.ReadFile(filepath.Join(dir, "out.csv"))
	require.NoError(t, err)
	first, _, _ := strings.Cut(string(head), "\n")
	kcvK := make([]byte, 16)
	kBlock.Encrypt(kcvK, make([]byte, 16))
	assert.Contains(t, first, fmt.Sprintf(`"base":{"label":"K","kcv":"%x"}`, kcvK[:3]))
	assert.Regexp(t, `"tokens":\["p11derive-lab \(serial [0-9a-f]+\)","second \(serial [0-9a-f]+\)"\]`, first)

	// A rerun with one of the tokens resumes the same output: the tokens
	// are a record, not a parameter.
	out = mustRun(t, run("batch", "--uri", uriA, "--base", "K", "--kdf", "aes-ecb", "--key-type", "aes", "--len", "16",
		"--input", "in.csv", "--output", "out.csv", "--wrap-key", "T"))
	assert.Contains(t, out, "60 rows read: 0 written, 0 failed, 60 already in the output")

	// Keep mode with several tokens: refused, exit code 2.
	cmd := run("batch", "--uri", uriA, "--uri", uriB, "--base", "K", "--kdf", "aes-ecb", "--key-type", "aes", "--len", "16",
		"--input", "in.csv", "--output", "keep.csv")
	got, err := cmd.CombinedOutput()
	require.Error(t, err)
	assert.Equal(t, 2, cmd.ProcessState.ExitCode(), "%s", got)
	assert.Contains(t, string(got), "keep mode takes one token, and --uri was given 2 times")
	_, err = os.Stat(filepath.Join(dir, "keep.csv"))
	assert.True(t, os.IsNotExist(err), "nothing written")

	// A token whose K is another key: refused at open, naming both tokens.
	other := make([]byte, 16)
	rand.Read(other)
	cctx, cs := lab.Open(t, c)
	lab.ImportSecretKey(t, cctx, cs, pkcs11.CKK_AES, other, "K", token)
	lab.ImportSecretKey(t, cctx, cs, pkcs11.CKK_AES, tValue, "T", token, pkcs11.NewAttribute(pkcs11.CKA_WRAP, true))
	cmd = run("batch", "--uri", uriA, "--uri", "pkcs11:token=third?module-path="+a.Module, "--base", "K", "--kdf", "aes-ecb",
		"--key-type", "aes", "--len", "16", "--input", "in.csv", "--output", "mismatch.csv", "--wrap-key", "T")
	got, err = cmd.CombinedOutput()
	require.Error(t, err)
	assert.Equal(t, 1, cmd.ProcessState.ExitCode(), "%s", got)
	assert.Regexp(t, `group: members 1 \(token "p11derive-lab" .*\) and 2 \(token "third" .*\) hold different keys as the secret key labelled "K": check value [0-9a-f]{6} on member 1, [0-9a-f]{6} on member 2`, string(got))

	// Another command with several --uri: refused, exit code 2.
	cmd = run("kcv", "--uri", uriA, "--uri", uriB, "--key", "K")
	got, err = cmd.CombinedOutput()
	require.Error(t, err)
	assert.Equal(t, 2, cmd.ProcessState.ExitCode(), "%s", got)
	assert.Contains(t, string(got), "only batch, in wrap mode, takes several tokens")
}
