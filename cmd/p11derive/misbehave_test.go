package main

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

var hideEncrypt = []string{
	"CKM_AES_ECB_ENCRYPT_DATA", "CKM_AES_CBC_ENCRYPT_DATA", "CKM_AES_MAC_GENERAL", "CKM_AES_CMAC", "CKM_AES_MAC", "CKM_AES_CMAC_GENERAL",
}

// wrappedNSS is NSS softoken's crypto slot behind a forwarder, opened in
// this process (the command runs in-process below), and its flags.
func wrappedNSS(t *testing.T, cfg fwd.Config) (*lab.Token, *pkcs11.Ctx, pkcs11.SessionHandle, []string) {
	t.Helper()
	real := lab.NSS(t)
	lab.Open(t, real)
	w := fwd.Wrap(t, real, cfg)
	ctx, sess := lab.Open(t, w)
	return w, ctx, sess, []string{"--module", w.Module, "--init-args", w.InitArgs, "--slot", strconv.FormatUint(uint64(w.SlotID), 10)}
}

func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// With templates stripped (the token ignores CKA_SENSITIVE and
// CKA_EXTRACTABLE), aes-ecb-decrypt, allowed, ends sensitive and not
// extractable, with the known answer and the warning; with
// --strict-attributes it is refused and nothing is left behind.
func TestDeriveWeakTemplates(t *testing.T) {
	w, ctx, sess, tf := wrappedNSS(t, fwd.Config{WeakTemplates: true, Hide: hideEncrypt})
	key := []byte{0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c}
	data, _ := hex.DecodeString("6bc1bee22e409f96e93d7e117393172a")
	base := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, key, "weak-base")
	defer ctx.DestroyObject(sess, base)
	b, _ := aes.NewCipher(key)
	dk, kcv := make([]byte, 16), make([]byte, 16)
	b.Decrypt(dk, data)
	d, _ := aes.NewCipher(dk)
	d.Encrypt(kcv, make([]byte, 16))

	args := append(append([]string{"derive"}, tf...), "--base", "weak-base", "--kdf", "aes-ecb", "--allow", "aes-ecb-decrypt",
		"--data", hex.EncodeToString(data), "--key-type", "aes", "--len", "16")
	before := lab.CountObjects(t, ctx, sess)
	code, out, stderr := runCmd(args...)
	require.Equal(t, 0, code, stderr)
	var j keyDoc
	require.NoError(t, json.Unmarshal([]byte(out), &j), out)
	assert.Equal(t, schemaVersion, j.SchemaVersion)
	assert.Equal(t, "aes-ecb-decrypt", j.KDF)
	assert.Equal(t, "unwrap", j.Strategy)
	assert.True(t, j.Sensitive)
	assert.False(t, j.Extractable)
	assert.False(t, j.AlwaysSensitive)
	assert.False(t, j.NeverExtractable)
	assert.Equal(t, hex.EncodeToString(kcv[:3]), j.KCV, "the known answer")
	assert.Contains(t, out, `"always_sensitive": false`)
	assert.Contains(t, out, "unwrap: the token ignored CKA_SENSITIVE=true and CKA_EXTRACTABLE=false in the template of C_UnwrapKey with CKM_AES_ECB")
	assert.Equal(t, before, lab.CountObjects(t, ctx, sess), "DK was a session object of the command")

	code, out, stderr = runCmd(append(args, "--strict-attributes")...)
	assert.Equal(t, 1, code, out)
	assert.Contains(t, stderr, "unwrap: C_UnwrapKey with CKM_AES_ECB: token made a weaker key than requested (destroyed): CKA_SENSITIVE is false, CKA_EXTRACTABLE is true (strict attributes")
	assert.Equal(t, before, lab.CountObjects(t, ctx, sess), "nothing left behind")
	_ = w
}

// A probe through a module whose calls answer CKR_CRYPTOKI_NOT_INITIALIZED
// reports errors, says INCOMPLETE and exits with status 3.
func TestProbeIncompleteExit(t *testing.T) {
	_, _, _, tf := wrappedNSS(t, fwd.Config{Faults: fwd.Uninitialised(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)})
	code, out, stderr := runCmd(append(append([]string{"probe"}, tf...), "--kdf", "aes-ecb,aes-ecb-decrypt")...)
	assert.Equal(t, exitIncomplete, code, stderr)
	assert.Contains(t, out, "INCOMPLETE")
	assert.Contains(t, out, " error ")
	assert.NotContains(t, out, "unavailable")
	assert.Contains(t, stderr, "the report is incomplete")
}

// The probe's table for a token that lists CKM_AES_ECB without
// CKF_UNWRAP: the unwrap strategies are not listed (they are tried
// anyway, after the others, and this token runs them).
func TestProbeNoUnwrapFlag(t *testing.T) {
	_, _, _, tf := wrappedNSS(t, fwd.Config{NoFlag: []string{"CKM_AES_ECB:CKF_UNWRAP"}})
	code, out, stderr := runCmd(append(append([]string{"probe"}, tf...), "--kdf", "aes-ecb,aes-cbc,aes-ecb-decrypt,aes-cbc-decrypt")...)
	require.Equal(t, 0, code, stderr)
	t.Log("\n" + out)
	code, out, stderr = runCmd(append(append([]string{"probe"}, tf...), "--list-only", "--kdf", "aes-ecb,aes-ecb-decrypt")...)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `aes-ecb-decrypt +unwrap +unavailable .*the token lists CKM_AES_ECB without CKF_UNWRAP`, out)
	assert.Regexp(t, `aes-ecb +mac-unwrap +unavailable .*the token lists CKM_AES_ECB without CKF_UNWRAP`, out)
	assert.Regexp(t, `aes-ecb +native +listed`, out)
	t.Log("\n" + out)
}
