package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/dukpt"
	"github.com/p11derive/p11derive/internal/kwref"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// TestBatchSchemeDUKPT is issue 17's done-when: a batch of 10,000 DUKPT
// initial keys (one per KSN) wrapped under a transport key, on NSS
// softoken's key database. For a sample of rows — the X9.24-3-2017
// supplement's KSN among them, whose IK 1273671E… is published — the
// wrapped key is the software reference's (AES-ECB of the derivation data
// under the BDK, wrapped by RFC 3394 in software), it unwraps in the token
// (Token.Unwrap) to a key whose check value is the reference's and the
// row's, and nothing is left in the token.
func TestBatchSchemeDUKPT(t *testing.T) {
	const n = 10000
	lt := lab.NSSDB(t)
	dir := t.TempDir()
	bdkValue := unhexT(t, "FEDCBA9876543210F1F1F1F1F1F1F1F1")
	tValue := unhexT(t, "000102030405060708090A0B0C0D0E0F")
	bdkLabel, tLabel := lab.UniqueLabel("bdk"), lab.UniqueLabel("transport")
	ctx, s := lab.Open(t, lt)
	token := pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true)
	hb := lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, bdkValue, bdkLabel, token, pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true))
	ht := lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, tValue, tLabel, token,
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true))
	t.Cleanup(func() { ctx.DestroyObject(s, hb); ctx.DestroyObject(s, ht) })

	var in bytes.Buffer
	in.WriteString("id,ksn\n")
	ksns := map[string]string{}
	for i := 0; i < n; i++ {
		ksn := fmt.Sprintf("12345678%08X00000000", i)
		if i == 0 {
			ksn = "123456789012345600000000" // the supplement's initial key ID
		}
		id := fmt.Sprintf("term-%05d", i)
		ksns[id] = ksn
		fmt.Fprintf(&in, "%s,%s\n", id, ksn)
	}
	in.WriteString("bad-row,12345678\n") // a KSN of 4 bytes: reported by line, skipped
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in.csv"), in.Bytes(), 0o600))
	before := lab.Objects(t, lt)

	cmd := p11derive(t, lt, dir, "batch", "--scheme", "dukpt-ik", "--slot", fmt.Sprint(lt.SlotID), "--base", bdkLabel,
		"--input", "in.csv", "--output", "out.csv", "--wrap-key", tLabel, "--workers", "2")
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "a bad row makes the exit status 1: %s", out)
	assert.Contains(t, string(out), fmt.Sprintf("line %d", n+2))
	recs := readOutput(t, filepath.Join(dir, "out.csv"))
	require.Len(t, recs, n)
	assert.Equal(t, before, lab.Objects(t, lt), "nothing left in the token")

	tok := labtok.Open(t, lt.Kind, lt).Tok
	bg := context.Background()
	transport, err := tok.FindKey(bg, tLabel)
	require.NoError(t, err)
	bdk, _ := aes.NewCipher(bdkValue)
	sampled := 0
	for i, r := range recs {
		if i%200 != 0 && r[0] != "term-00000" {
			continue
		}
		sampled++
		ksn := unhexT(t, ksns[r[0]])
		ik := make([]byte, 16)
		bdk.Encrypt(ik, dukpt.DerivationData(dukpt.InitialKeyUsage, dukpt.AES128, ksn[:dukpt.IKIDLen]))
		if r[0] == "term-00000" {
			assert.Equal(t, "1273671ea26ac29afa4d1084127652a1", hex.EncodeToString(ik), "the supplement's initial key")
		}
		want, err := kwref.Wrap(tValue, kwref.IV, ik)
		require.NoError(t, err)
		assert.Equal(t, hex.EncodeToString(want), r[1], r[0])
		ikBlock, _ := aes.NewCipher(ik)
		kcv := make([]byte, 16)
		ikBlock.Encrypt(kcv, kcv)
		assert.Equal(t, hex.EncodeToString(kcv[:3]), r[2], r[0])

		wrapped := unhexT(t, r[1])
		k, err := tok.Unwrap(bg, transport, 0x2109 /* CKM_AES_KEY_WRAP */, nil, wrapped, derive.KeySpec{Type: derive.KeyAES128, Usage: derive.UseEncrypt})
		require.NoError(t, err)
		got, err := tok.CheckValue(bg, k)
		require.NoError(t, err)
		require.NoError(t, tok.Destroy(bg, k))
		assert.Equal(t, hex.EncodeToString(kcv[:3]), hex.EncodeToString(got), r[0])
	}
	assert.GreaterOrEqual(t, sampled, 50)
}

// TestBatchSchemeKillKeep is TestBatchKillKeep for batch --scheme in keep
// mode (dukpt-ik, 200 initial keys as token objects) on SoftHSM2 and NSS
// softoken's key database: killed at a key made under its provisional
// label, at a key labelled before its row is written, and at random
// moments, then run to the end. One row per id, one key per label, every
// check value the software reference's (X9.24-3's IK derivation by Go's
// AES), every key with its value, no provisional key left, no key the
// output does not list.
func TestBatchSchemeKillKeep(t *testing.T) {
	for _, kind := range []string{lab.KindSoftHSM2, lab.KindNSS} {
		t.Run(kind, func(t *testing.T) {
			lt := lab.SoftHSM2(t)
			if kind == lab.KindNSS {
				lt = lab.NSSDB(t)
			}
			dir := t.TempDir()
			pre := lab.UniqueLabel("skill-"+kind) + "-"
			bdkValue := lab.Random(t, 16)
			ctx, s := lab.Open(t, lt)
			lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_AES, bdkValue, pre+"BDK", pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
			const n = 200
			var in bytes.Buffer
			in.WriteString("id,ksn\n")
			ksns := map[string][]byte{}
			for i := range n {
				id, ksn := fmt.Sprintf("t%02d", i), fmt.Sprintf("AB%014X00000000", i)
				ksns[id] = unhexT(t, ksn)
				fmt.Fprintf(&in, "%s,%s\n", id, ksn)
			}
			require.NoError(t, os.WriteFile(filepath.Join(dir, "in.csv"), in.Bytes(), 0o600))
			args := []string{"batch", "--scheme", "dukpt-ik", "--slot", fmt.Sprint(lt.SlotID), "--base", pre + "BDK",
				"--input", "in.csv", "--output", "out.csv", "--label-template", pre + "ik-{id}", "--workers", "2"}
			kills := killAtSteps(t, lt, dir, args)
			// Killed at a random moment of the derivations, once the run
			// has written a row: not while it opens SoftHSM2's store,
			// which a kill there can leave without a token for the next
			// process (SoftHSM2's own store, not p11derive's keys).
			for i := range 3 {
				out := filepath.Join(dir, "out.csv")
				before, _ := os.Stat(out)
				cmd := p11derive(t, lt, dir, args...)
				require.NoError(t, cmd.Start())
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if now, err := os.Stat(out); err == nil && (before == nil || now.Size() > before.Size()) {
						break
					}
				}
				time.Sleep(time.Duration(i) * 40 * time.Millisecond)
				cmd.Process.Signal(syscall.SIGKILL)
				if cmd.Wait() != nil {
					kills++
				}
			}
			out := mustRun(t, p11derive(t, lt, dir, args...))
			t.Logf("%d kills, then: %s", kills, strings.TrimSpace(out))

			bdk, _ := aes.NewCipher(bdkValue)
			checkKept(t, lt, ctx, s, filepath.Join(dir, "out.csv"), n, pre, pre+"BDK", func(id string) []byte {
				ik, kcv := make([]byte, 16), make([]byte, 16)
				bdk.Encrypt(ik, dukpt.DerivationData(dukpt.InitialKeyUsage, dukpt.AES128, ksns[id][:dukpt.IKIDLen]))
				ikBlock, _ := aes.NewCipher(ik)
				ikBlock.Encrypt(kcv, kcv)
				return kcv[:3]
			})
		})
	}
}

// TestBatchSchemeManifest: a batch --scheme output carries the run's
// parameters; a rerun with another option or base key is refused, naming
// the difference, and leaves the output as it was; --new-output moves it
// aside and starts afresh.
func TestBatchSchemeManifest(t *testing.T) {
	lt := lab.SoftHSM2(t)
	dir := t.TempDir()
	ctx, s := lab.Open(t, lt)
	imk, other := lab.UniqueLabel("imk"), lab.UniqueLabel("imk-other")
	lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_DES2, lab.Unhex("0123456789ABCDEFFEDCBA9876543210"), imk, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
	lab.ImportSecretKey(t, ctx, s, pkcs11.CKK_DES2, lab.Unhex("1123456789ABCDEFFEDCBA9876543211"), other, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "in.csv"), []byte("id,pan,psn\nc1,4761739001010010,01\nc2,4761739001010028,00\n"), 0o600))
	run := func(args ...string) (string, error) {
		cmd := p11derive(t, lt, dir, append([]string{"batch", "--scheme", "emv-mk", "--slot", fmt.Sprint(lt.SlotID),
			"--input", "in.csv", "--output", "out.csv", "--label-template", lab.UniqueLabel("icc") + "-{id}"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run("--base", imk, "--option", "a")
	require.NoError(t, err, out)
	first, err := os.ReadFile(filepath.Join(dir, "out.csv"))
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(first, []byte("# p11derive batch {")), "%s", first)
	assert.Contains(t, string(first), `"scheme":"emv-mk"`)
	assert.Contains(t, string(first), `"option":"a"`)
	assert.Contains(t, string(first), `"label":"`+imk+`"`)
	assert.Len(t, readOutput(t, filepath.Join(dir, "out.csv")), 2)

	for _, c := range []struct {
		args []string
		diff string
	}{
		{[]string{"--base", imk, "--option", "b"}, "params.option"},
		{[]string{"--base", other, "--option", "a"}, "base.kcv"},
	} {
		out, err := run(c.args...)
		require.Error(t, err, out)
		assert.Contains(t, out, c.diff, "the difference named")
		now, rerr := os.ReadFile(filepath.Join(dir, "out.csv"))
		require.NoError(t, rerr)
		assert.Equal(t, first, now, "the output left as it was")
	}
	out, err = run("--base", imk, "--option", "b", "--new-output")
	require.NoError(t, err, out)
	aside, err := os.ReadFile(filepath.Join(dir, "out.csv.1"))
	require.NoError(t, err, out)
	assert.Equal(t, first, aside, "the old output moved aside")
	now, err := os.ReadFile(filepath.Join(dir, "out.csv"))
	require.NoError(t, err)
	assert.Contains(t, string(now), `"option":"b"`)
}

func unhexT(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}
