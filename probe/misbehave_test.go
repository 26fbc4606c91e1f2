package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// A module whose calls answer CKR_CRYPTOKI_NOT_INITIALIZED behind working
// slot and token functions: every result is an error, never unavailable
// or failed, and the report says it is incomplete.
func TestModuleNotInitialised(t *testing.T) {
	for _, ckr := range []uint{pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_GENERAL_ERROR} {
		lt := nssFwd(t, fwd.Config{Faults: fwd.Uninitialised(ckr)})
		rep, err := Run(context.Background(), lt.Tok, Options{Functions: []string{"aes-ecb", "aes-ecb-decrypt", "hkdf"}})
		require.NoError(t, err)
		assert.True(t, rep.Incomplete)
		for _, r := range rep.Results {
			assert.Equal(t, Error, r.Status, "%s/%s: %s", r.KDF, r.Strategy, r.Reason)
		}
		for _, b := range rep.Verification.BaseKeys {
			assert.Equal(t, ckrString(ckr), b.GenerateCKR)
		}
		var out bytes.Buffer
		require.NoError(t, rep.WriteText(&out))
		assert.Contains(t, out.String(), "INCOMPLETE")
		assert.NotContains(t, out.String(), "unavailable")
	}
}

// A key that vanishes (CKR_OBJECT_HANDLE_INVALID from a proxy that hides
// keys) is an error, not unavailable.
func TestVanishedKeyIsAnError(t *testing.T) {
	lt := nssFwd(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_DeriveKey", N: 1, From: true, CKR: pkcs11.CKR_OBJECT_HANDLE_INVALID}}})
	rep := lt.run(t, Options{Functions: []string{"aes-ecb"}})
	r := result(t, rep, "aes-ecb", "native")
	assert.Equal(t, Error, r.Status)
	assert.Equal(t, "CKR_OBJECT_HANDLE_INVALID", r.CKR)
	assert.True(t, rep.Incomplete)
	assert.Equal(t, Verified, result(t, rep, "aes-ecb", "mac-unwrap").Status)
}

// A token that ignores CKA_SENSITIVE/CKA_EXTRACTABLE in templates: its
// keys are tightened, so the strategies are verified, each with the
// warning; the probe's own test keys say so too.
func TestWeakTemplatesVerified(t *testing.T) {
	lt := nssFwd(t, fwd.Config{WeakTemplates: true})
	rep := lt.run(t, Options{Functions: []string{"aes-ecb", "aes-ecb-decrypt"}})
	for _, s := range []string{"native", "mac-unwrap", "cmac-unwrap"} {
		r := result(t, rep, "aes-ecb", s)
		assert.Equal(t, Verified, r.Status, s)
		assert.Contains(t, strings.Join(r.Notes, "\n"), s+": the token ignored CKA_SENSITIVE=true and CKA_EXTRACTABLE=false", s)
	}
	r := result(t, rep, "aes-ecb-decrypt", "unwrap")
	assert.Equal(t, Verified, r.Status)
	assert.Contains(t, strings.Join(r.Notes, "\n"), "C_UnwrapKey with CKM_AES_ECB")
	for _, b := range rep.Verification.BaseKeys {
		assert.Equal(t, "imported", b.Source)
		assert.Contains(t, strings.Join(b.Notes, "\n"), "C_CreateObject")
	}
}

// The probe's test keys carry only what their strategy needs.
func TestTestKeysPerStrategy(t *testing.T) {
	lt := nss(t)
	rep := lt.run(t, Options{Functions: []string{"aes-ecb", "aes-ecb-decrypt"}})
	var usages []string
	for _, b := range rep.Verification.BaseKeys {
		usages = append(usages, strings.Join(b.Usage, ","))
	}
	assert.ElementsMatch(t, []string{"CKA_DERIVE", "CKA_SIGN,CKA_UNWRAP", "CKA_SIGN,CKA_ENCRYPT,CKA_UNWRAP", "CKA_UNWRAP"}, usages)
}

// A token that refuses the test keys in a read-only session: without
// ReadWrite the report says why and that --rw would retry; with it, the
// key is made in a read-write session, and the report says which.
func TestReadOnlyRefusal(t *testing.T) {
	ro := []fwd.Fault{{Func: "C_CreateObject", N: 1, CKR: pkcs11.CKR_SESSION_READ_ONLY}}
	lt := nssFwd(t, fwd.Config{Faults: ro})
	rep := lt.run(t, Options{Functions: []string{"aes-ecb-decrypt"}})
	require.Len(t, rep.Verification.BaseKeys, 1)
	b := rep.Verification.BaseKeys[0]
	assert.Equal(t, "generated", b.Source)
	assert.Equal(t, "CKR_SESSION_READ_ONLY", b.ImportCKR)
	assert.Contains(t, b.Reason, "--rw")

	lt = nssFwd(t, fwd.Config{Faults: ro})
	opened := 0
	rep = lt.run(t, Options{Functions: []string{"aes-ecb-decrypt"}, ReadWrite: func() (*derive.Token, error) {
		opened++
		return derive.Open(labtok.Config(lt.Lab))
	}})
	assert.Equal(t, 1, opened)
	require.Len(t, rep.Verification.BaseKeys, 1)
	b = rep.Verification.BaseKeys[0]
	assert.Equal(t, "imported", b.Source)
	assert.Equal(t, "read-write", b.Session)
	assert.Equal(t, Verified, result(t, rep, "aes-ecb-decrypt", "unwrap").Status)
}

// Token strings padded with NULs (a TPM-backed token's model field): the
// URI matches them trimmed, and no output carries a NUL.
func TestNULPaddedTokenInfo(t *testing.T) {
	real := lab.NSS(t)
	lab.Open(t, real)
	w := fwd.Wrap(t, real, fwd.Config{PadTokenInfo: true})
	tok, err := derive.Open(derive.Config{Module: w.Module, InitArgs: w.InitArgs,
		URI: "pkcs11:token=NSS%20Generic%20Crypto%20Services;manufacturer=Mozilla%20Foundation;model=NSS%203;serial=0000000000000000"})
	require.NoError(t, err)
	defer tok.Close()
	assert.Equal(t, "NSS 3", tok.Info().Model)
	rep, err := Run(context.Background(), tok, Options{ListOnly: true, Functions: []string{"aes-ecb"}})
	require.NoError(t, err)
	var text, md, js bytes.Buffer
	require.NoError(t, rep.WriteText(&text))
	require.NoError(t, rep.WriteMarkdown(&md))
	require.NoError(t, rep.WriteJSON(&js))
	for name, b := range map[string][]byte{"text": text.Bytes(), "markdown": md.Bytes(), "json": js.Bytes()} {
		assert.NotContains(t, string(b), "\x00", name)
		assert.NotContains(t, string(b), `\u0000`, name)
	}
	var got struct {
		Token TokenInfo `json:"token"`
	}
	require.NoError(t, json.Unmarshal(js.Bytes(), &got))
	assert.Equal(t, "NSS Generic Crypto Services", got.Token.Label)
	assert.Equal(t, "Mozilla Foundation", got.Token.Manufacturer)
	assert.Equal(t, "0000000000000000", got.Token.Serial)
}
