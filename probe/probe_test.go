package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// want is what a result must say.
type want struct {
	status Status
	by     VerifiedBy
	ckr    string // "" for none
	call   string
	reason string // a substring of Reason, or ""
}

var (
	verifiedKA = want{status: Verified, by: KnownAnswer}
	verifiedCC = want{status: Verified, by: CrossCheck}
	ran        = want{status: Ran, by: None}
)

func refused(status Status, call string) want {
	return want{status: status, by: None, ckr: "CKR_MECHANISM_INVALID", call: call}
}

func wrong() want { return want{status: Failed, by: None, reason: "wrong result"} }

// Function groups, as the probe names them (displayName).
var (
	encryptAES  = []string{"aes-ecb", "aes-cbc"}
	encryptDES3 = []string{"des3-ecb", "des3-cbc"}
	encryptDES  = []string{"des-ecb", "des-cbc"}
	decrypts    = []string{"aes-ecb-decrypt", "aes-cbc-decrypt", "des3-ecb-decrypt", "des3-cbc-decrypt", "des-ecb-decrypt", "des-cbc-decrypt"}
	kdfs        = []string{
		"sp800-108-counter hmac-sha256", "sp800-108-counter hmac-sha384", "sp800-108-counter hmac-sha512", "sp800-108-counter aes-cmac",
		"sp800-108-feedback hmac-sha256", "sp800-108-feedback hmac-sha384", "sp800-108-feedback hmac-sha512", "sp800-108-feedback aes-cmac",
		"hkdf sha256", "hkdf sha384", "hkdf sha512", "sha256-concat",
	}
)

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// expect maps "function strategy" to what the result must say.
type expect map[string]want

func (e expect) set(fns []string, strategy string, w want) expect {
	for _, f := range fns {
		e[f+"/"+strategy] = w
	}
	return e
}

func key(r *Result) string { return displayName(r.KDF, r.Params) + "/" + r.Strategy }

// check compares every result with e, field by field, and requires e to
// name every result of the functions it knows (and nothing more).
func check(t *testing.T, rep *Report, e expect) {
	t.Helper()
	seen := map[string]bool{}
	for i := range rep.Results {
		r := &rep.Results[i]
		k := key(r)
		seen[k] = true
		w, ok := e[k]
		if !ok {
			if known(r.KDF) {
				t.Errorf("%s: unexpected result %s", k, r.Status)
			} else {
				t.Logf("%s: %s (a function this test does not know)", k, r.Status)
			}
			continue
		}
		assert.Equal(t, w.status, r.Status, "%s status (reason %q)", k, r.Reason)
		assert.Equal(t, w.by, r.VerifiedBy, "%s verified_by", k)
		assert.Equal(t, w.ckr, r.CKR, "%s ckr", k)
		assert.Equal(t, w.call, r.Call, "%s call", k)
		if w.reason != "" {
			assert.Contains(t, r.Reason, w.reason, k)
		}
		assert.Equal(t, "AES-128", r.KeyType, k)
		assert.NotEmpty(t, r.Needs, k)
		assert.NotEmpty(t, r.Mechanisms, k)
		assert.Positive(t, r.PlannedCalls, k)
		switch r.Status {
		case Verified, Ran:
			assert.GreaterOrEqual(t, r.Calls, r.PlannedCalls, "%s calls", k)
			assert.Positive(t, r.MedianNS, "%s median", k)
			assert.Equal(t, 3, r.Runs, "%s runs", k)
			assert.Len(t, r.CheckValue, 6, k)
		case Failed, Unavailable:
			if w.reason != "wrong result" {
				assert.Zero(t, r.Calls, k)
			}
			assert.NotEmpty(t, r.Reason, k)
		}
		if r.Status == Verified && r.VerifiedBy == KnownAnswer {
			assert.Equal(t, r.Expected, r.CheckValue, k)
		}
		if strings.HasPrefix(r.Reason, "wrong result") {
			assert.NotEqual(t, Verified, r.Status)
		}
	}
	for k := range e {
		assert.True(t, seen[k], "no result for %s", k)
	}
}

// known reports whether the tests above know the function.
func known(kdf string) bool {
	for _, f := range cat(encryptAES, encryptDES3, encryptDES, decrypts) {
		if f == kdf {
			return true
		}
	}
	for _, f := range kdfs {
		if strings.HasPrefix(f, kdf+" ") || f == kdf {
			return true
		}
	}
	return false
}

func result(t *testing.T, rep *Report, fn, strategy string) *Result {
	t.Helper()
	for i := range rep.Results {
		if key(&rep.Results[i]) == fn+"/"+strategy {
			return &rep.Results[i]
		}
	}
	t.Fatalf("no result for %s/%s", fn, strategy)
	return nil
}

func mechanism(t *testing.T, rep *Report, name string) Mechanism {
	t.Helper()
	for _, m := range rep.Mechanisms {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no mechanism %s", name)
	return Mechanism{}
}

func boolp(b bool) *bool { return &b }

// SoftHSM2 2.6.1: native ENCRYPT_DATA for AES and Triple DES; it lists
// CKM_DES_ECB/CBC_ENCRYPT_DATA but refuses them; no MAC_GENERAL; it lists
// CKM_AES_ECB, CKM_DES3_ECB and CKM_AES_CMAC but unwraps with none of
// them; no SP 800-108, HKDF or concatenation.
func TestSoftHSM2(t *testing.T) {
	lt := softhsm2(t)
	rep := lt.run(t, Options{})

	assert.Equal(t, SchemaVersion, rep.SchemaVersion)
	assert.Equal(t, "p11derive-lab", rep.Token.Label)
	assert.Equal(t, "SoftHSM project", rep.Token.Manufacturer)
	assert.Equal(t, "SoftHSM v2", rep.Token.Model)
	assert.Equal(t, "2.6", rep.Token.Firmware)
	assert.Equal(t, lt.Lab.SlotID, rep.Token.Slot)
	assert.NotEmpty(t, rep.Token.Serial)
	assert.Contains(t, rep.Token.Flags, "login-required")
	assert.Equal(t, "CKS_RW_USER_FUNCTIONS", rep.Token.Session)
	assert.Equal(t, "SoftHSM", rep.Token.Module.Manufacturer)
	assert.Equal(t, "2.40", rep.Token.Module.PKCS11Version)
	assert.Equal(t, "known-answer", rep.Verification.Method)
	assertBaseKeys(t, rep, "imported")

	e := expect{}.
		set(cat(encryptAES, encryptDES3), "native", verifiedKA).
		set(encryptDES, "native", refused(Failed, "C_DeriveKey")).
		set(cat(encryptAES, encryptDES3, encryptDES), "mac-unwrap", refused(Unavailable, "C_SignInit")).
		set(cat(encryptAES, encryptDES3), "cmac-unwrap", refused(Unavailable, "C_UnwrapKey")).
		set(encryptAES, "stream-unwrap", refused(Unavailable, "C_UnwrapKey")).
		set(decrypts, "unwrap", refused(Unavailable, "C_UnwrapKey")).
		set(kdfs, "native", refused(Unavailable, "C_DeriveKey"))
	check(t, rep, e)

	// The details of one result of each kind.
	n := result(t, rep, "aes-ecb", "native")
	assert.Equal(t, []string{"CKA_DERIVE"}, n.Needs)
	assert.Equal(t, []MechanismUse{{Name: "CKM_AES_ECB_ENCRYPT_DATA", Listed: true, Use: "derive", Flag: boolp(true)}}, n.Mechanisms)
	assert.Equal(t, "6d60f8", n.CheckValue) // AES-128 key 3ad77bb4... (SP 800-38A F.1.1)
	assert.Equal(t, "aes-128", n.BaseKey)
	c := result(t, rep, "aes-ecb", "cmac-unwrap")
	assert.Equal(t, []string{"CKA_SIGN", "CKA_UNWRAP", "CKA_ENCRYPT"}, c.Needs)
	assert.Equal(t, []MechanismUse{{Name: "CKM_AES_CMAC", Listed: true, Use: "sign", Flag: boolp(true)},
		{Name: "CKM_AES_ECB", Listed: true, Use: "encrypt+unwrap", Flag: boolp(false), Lacks: "CKF_UNWRAP"}}, c.Mechanisms)
	assert.Contains(t, c.Notes, "the token lists CKM_AES_ECB without CKF_UNWRAP (C_GetMechanismInfo)")
	m := result(t, rep, "aes-ecb", "mac-unwrap")
	assert.Equal(t, []MechanismUse{{Name: "CKM_AES_MAC_GENERAL", Listed: false, Use: "sign"},
		{Name: "CKM_AES_ECB", Listed: true, Use: "unwrap", Flag: boolp(false), Lacks: "CKF_UNWRAP"}}, m.Mechanisms)
	assert.Equal(t, map[string]string{"iv": "000102030405060708090a0b0c0d0e0f"}, result(t, rep, "aes-cbc", "native").Params)

	ed := mechanism(t, rep, "CKM_AES_ECB_ENCRYPT_DATA")
	assert.True(t, ed.Listed)
	assert.Equal(t, []string{"derive"}, ed.Flags)
	assert.False(t, mechanism(t, rep, "CKM_AES_MAC_GENERAL").Listed)
	assert.Equal(t, []string{"encrypt", "decrypt"}, mechanism(t, rep, "CKM_AES_ECB").Flags)
	assert.Equal(t, uint(16), mechanism(t, rep, "CKM_AES_ECB").MinKeySize)
	assert.False(t, mechanism(t, rep, "CKM_SP800_108_COUNTER_KDF").Listed)
	assert.Contains(t, mechanism(t, rep, "CKM_AES_KEY_WRAP").Flags, "unwrap")
}

func assertBaseKeys(t *testing.T, rep *Report, source string) {
	t.Helper()
	var types []string
	seen := map[string]bool{}
	for _, b := range rep.Verification.BaseKeys {
		if !seen[b.Type] {
			types = append(types, b.Type)
		}
		seen[b.Type] = true
		assert.Equal(t, source, b.Source, b.Type)
	}
	sort.Strings(types)
	assert.Equal(t, []string{"aes-128", "des", "des3", "generic-32"}, types)
}

// nssExpect is what the NSS softoken 3.87 crypto slot does: native
// ENCRYPT_DATA for AES and Triple DES (not single DES), MAC-unwrap for all
// three ciphers, CMAC-unwrap for AES only (no CKM_DES3_CMAC), the inverse
// by unwrap for all, SP 800-108, HKDF and SHA-256 concatenation; it lists
// CKM_AES_CTR but does not unwrap with it.
func nssExpect() expect {
	return expect{}.
		set(cat(encryptAES, encryptDES3), "native", verifiedKA).
		set(encryptDES, "native", refused(Unavailable, "C_DeriveKey")).
		set(cat(encryptAES, encryptDES3, encryptDES), "mac-unwrap", verifiedKA).
		set(encryptAES, "cmac-unwrap", verifiedKA).
		set(encryptDES3, "cmac-unwrap", refused(Unavailable, "C_SignInit")).
		set(encryptAES, "stream-unwrap", refused(Unavailable, "C_UnwrapKey")).
		set(decrypts, "unwrap", verifiedKA).
		set(kdfs, "native", verifiedKA)
}

func TestNSS(t *testing.T) {
	lt := nss(t)
	rep := lt.run(t, Options{})
	assert.Equal(t, "NSS Generic Crypto Services", rep.Token.Label)
	assert.Equal(t, "Mozilla Foundation", rep.Token.Manufacturer)
	assert.Equal(t, "NSS 3", rep.Token.Model)
	assert.Equal(t, "CKS_RW_PUBLIC_SESSION", rep.Token.Session, "no login")
	assert.Equal(t, "2.40", rep.Token.Module.PKCS11Version)
	assert.Equal(t, "known-answer", rep.Verification.Method)
	assertBaseKeys(t, rep, "imported")
	check(t, rep, nssExpect())

	s := result(t, rep, "aes-ecb", "stream-unwrap")
	assert.Equal(t, []MechanismUse{{Name: "CKM_AES_CTR", Listed: true, Use: "unwrap", Flag: boolp(false), Lacks: "CKF_UNWRAP"},
		{Name: "CKM_CONCATENATE_BASE_AND_KEY", Listed: true, Use: "derive", Flag: boolp(true)}}, s.Mechanisms)
	for _, r := range rep.Results {
		if r.Strategy == "mac-unwrap" || r.Strategy == "cmac-unwrap" || r.Strategy == "native" {
			if r.Status == Verified {
				assert.Equal(t, r.Expected, r.CheckValue)
			}
		}
	}
	// The same function gives the same key whatever the strategy.
	assert.Equal(t, result(t, rep, "aes-cbc", "native").CheckValue, result(t, rep, "aes-cbc", "mac-unwrap").CheckValue)
	assert.Equal(t, result(t, rep, "des3-cbc", "native").CheckValue, result(t, rep, "des3-cbc", "mac-unwrap").CheckValue)
	assert.True(t, mechanism(t, rep, "CKM_SP800_108_DOUBLE_PIPELINE_KDF").Listed)
	assert.False(t, mechanism(t, rep, "CKM_DES3_CMAC").Listed)
	assert.Contains(t, mechanism(t, rep, "CKM_AES_ECB").Flags, "unwrap")
}

// Every *_ENCRYPT_DATA mechanism hidden: native unavailable (not listed,
// and refused), MAC-unwrap verified all the same.
func TestHiddenEncryptData(t *testing.T) {
	lt := nssFwd(t, fwd.Config{Hide: encryptData})
	rep := lt.run(t, Options{})
	e := nssExpect().set(cat(encryptAES, encryptDES3, encryptDES), "native", refused(Unavailable, "C_DeriveKey"))
	check(t, rep, e)
	for _, n := range encryptData {
		assert.False(t, mechanism(t, rep, n).Listed, n)
	}
}

var encryptData = []string{
	"CKM_AES_ECB_ENCRYPT_DATA", "CKM_AES_CBC_ENCRYPT_DATA", "CKM_DES3_ECB_ENCRYPT_DATA",
	"CKM_DES3_CBC_ENCRYPT_DATA", "CKM_DES_ECB_ENCRYPT_DATA", "CKM_DES_CBC_ENCRYPT_DATA",
}

// A token that lists a mechanism but refuses it at call time is
// listed-but-failing: failed, with the CKR code.
func TestListedButFailing(t *testing.T) {
	t.Run("derive", func(t *testing.T) {
		lt := nssFwd(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_DeriveKey", N: 1, From: true, CKR: pkcs11.CKR_MECHANISM_INVALID}}})
		rep := lt.run(t, Options{})
		e := nssExpect().
			set(cat(encryptAES, encryptDES3, kdfs), "native", refused(Failed, "C_DeriveKey")).
			set(encryptDES, "native", refused(Unavailable, "C_DeriveKey"))
		check(t, rep, e)
	})
	t.Run("unwrap", func(t *testing.T) {
		lt := nssFwd(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_UnwrapKey", N: 1, From: true, CKR: pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED}}})
		rep := lt.run(t, Options{})
		fail := want{status: Failed, by: None, ckr: "CKR_KEY_FUNCTION_NOT_PERMITTED", call: "C_UnwrapKey"}
		e := nssExpect().
			set(cat(encryptAES, encryptDES3, encryptDES), "mac-unwrap", fail).
			set(encryptAES, "cmac-unwrap", fail).
			set(decrypts, "unwrap", fail).
			set(encryptAES, "stream-unwrap", want{status: Unavailable, by: None, ckr: "CKR_KEY_FUNCTION_NOT_PERMITTED", call: "C_UnwrapKey"})
		check(t, rep, e)
	})
	t.Run("second run", func(t *testing.T) {
		// The first derivation works, the second fails: failed, not
		// verified.
		lt := nssFwd(t, fwd.Config{Hide: encryptData, Faults: []fwd.Fault{{Func: "C_UnwrapKey", N: 2, CKR: pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED}}})
		rep := lt.run(t, Options{Functions: []string{"aes-ecb"}})
		r := result(t, rep, "aes-ecb", "mac-unwrap")
		assert.Equal(t, Failed, r.Status)
		assert.Equal(t, "CKR_KEY_FUNCTION_NOT_PERMITTED", r.CKR)
		assert.Contains(t, r.Reason, "run 2")
	})
}

// A token that returns wrong bits is reported wrong, never verified.
func TestWrongResults(t *testing.T) {
	t.Run("unwrap", func(t *testing.T) {
		lt := nssFwd(t, fwd.Config{Corrupt: []string{"C_UnwrapKey"}})
		rep := lt.run(t, Options{})
		e := nssExpect().
			set(cat(encryptAES, encryptDES3, encryptDES), "mac-unwrap", wrong()).
			set(encryptAES, "cmac-unwrap", wrong()).
			set(decrypts, "unwrap", wrong())
		check(t, rep, e)
		r := result(t, rep, "aes-ecb", "mac-unwrap")
		assert.NotEqual(t, r.Expected, r.CheckValue)
		assert.Equal(t, "6d60f8", r.Expected)
		assert.Positive(t, r.Calls)
	})
	t.Run("derive", func(t *testing.T) {
		// The forwarder corrupts the data of *_ECB_ENCRYPT_DATA and
		// CONCATENATE_BASE_AND_DATA, and the IV of *_CBC_ENCRYPT_DATA;
		// SP 800-108 and HKDF parameters go through unchanged.
		lt := nssFwd(t, fwd.Config{Corrupt: []string{"C_DeriveKey"}})
		rep := lt.run(t, Options{})
		e := nssExpect().
			set(cat(encryptAES, encryptDES3), "native", wrong()).
			set([]string{"sha256-concat"}, "native", wrong())
		check(t, rep, e)
	})
	t.Run("unstable", func(t *testing.T) {
		// Cross-checking, the runs of one strategy must agree too.
		lt := nssFwd(t, fwd.Config{Hide: encryptData, Corrupt: []string{"C_UnwrapKey:2"}})
		rep := lt.run(t, Options{NoImport: true, Functions: []string{"aes-ecb"}})
		r := result(t, rep, "aes-ecb", "mac-unwrap")
		assert.Equal(t, Failed, r.Status)
		assert.Contains(t, r.Reason, "wrong result: unstable, run 2 gave check value")
		// CMAC-unwrap ran alone after it: nothing to compare with.
		assert.Equal(t, Ran, result(t, rep, "aes-ecb", "cmac-unwrap").Status)
	})
	t.Run("no check value", func(t *testing.T) {
		// A token that will not encrypt with DK: the key cannot be
		// checked, so it ran, unverified.
		lt := nssFwd(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_EncryptInit", N: 1, From: true, CKR: pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED}}})
		rep := lt.run(t, Options{Functions: []string{"aes-ecb"}})
		n := result(t, rep, "aes-ecb", "native")
		assert.Equal(t, Ran, n.Status)
		assert.Equal(t, None, n.VerifiedBy)
		assert.Contains(t, n.Reason, "DK's check value could not be computed")
		c := result(t, rep, "aes-ecb", "cmac-unwrap")
		assert.Equal(t, Failed, c.Status, "CMAC-unwrap encrypts for L")
		assert.Equal(t, "C_EncryptInit", c.Call)
	})
	t.Run("later run", func(t *testing.T) {
		lt := nssFwd(t, fwd.Config{Hide: encryptData, Corrupt: []string{"C_UnwrapKey:3"}})
		rep := lt.run(t, Options{Functions: []string{"aes-ecb"}})
		r := result(t, rep, "aes-ecb", "mac-unwrap")
		assert.Equal(t, Failed, r.Status)
		assert.Contains(t, r.Reason, "wrong result")
		assert.Contains(t, r.Reason, "run 3 of 3")
	})
}

// Without imported keys the probe cross-checks the strategies: verified
// when two or more agree, ran when one ran alone.
func TestCrossCheck(t *testing.T) {
	check1 := func(t *testing.T, rep *Report) {
		e := expect{}.
			set(cat(encryptAES, encryptDES3), "native", verifiedCC).
			set(encryptDES, "native", refused(Unavailable, "C_DeriveKey")).
			set(cat(encryptAES, encryptDES3, encryptDES), "mac-unwrap", verifiedCC).
			set(encryptAES, "cmac-unwrap", verifiedCC).
			set(encryptDES3, "cmac-unwrap", refused(Unavailable, "C_SignInit")).
			set(encryptAES, "stream-unwrap", refused(Unavailable, "C_UnwrapKey")).
			set(decrypts, "unwrap", ran).
			set(kdfs, "native", ran)
		// Single DES: only MAC-unwrap runs, nothing to compare with.
		e.set(encryptDES, "mac-unwrap", ran)
		check(t, rep, e)
		assert.Contains(t, result(t, rep, "aes-ecb", "native").Notes, "same check value from native, mac-unwrap, cmac-unwrap")
		assert.Contains(t, result(t, rep, "aes-ecb-decrypt", "unwrap").Reason, "no other strategy")
	}
	t.Run("no-import", func(t *testing.T) {
		rep := nss(t).run(t, Options{NoImport: true})
		assert.Equal(t, "cross-check", rep.Verification.Method)
		assertBaseKeys(t, rep, "generated")
		check1(t, rep)
	})
	t.Run("import refused", func(t *testing.T) {
		lt := nssFwd(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_CreateObject", N: 1, From: true, CKR: pkcs11.CKR_TEMPLATE_INCONSISTENT}}})
		rep := lt.run(t, Options{})
		assert.Equal(t, "cross-check", rep.Verification.Method)
		assertBaseKeys(t, rep, "generated")
		for _, b := range rep.Verification.BaseKeys {
			assert.Equal(t, "CKR_TEMPLATE_INCONSISTENT", b.ImportCKR)
			assert.Contains(t, b.Reason, "refused to import")
		}
		check1(t, rep)
	})
	t.Run("disagreement", func(t *testing.T) {
		// MAC-unwrap and CMAC-unwrap share C_UnwrapKey: corrupted, they
		// agree with each other against native. No majority vote: all
		// three fail.
		lt := nssFwd(t, fwd.Config{Corrupt: []string{"C_UnwrapKey"}})
		rep := lt.run(t, Options{NoImport: true, Functions: []string{"aes-ecb"}})
		n, m, c := result(t, rep, "aes-ecb", "native"), result(t, rep, "aes-ecb", "mac-unwrap"), result(t, rep, "aes-ecb", "cmac-unwrap")
		assert.Equal(t, m.CheckValue, c.CheckValue)
		assert.NotEqual(t, n.CheckValue, m.CheckValue)
		for _, r := range []*Result{n, m, c} {
			assert.Equal(t, Failed, r.Status, r.Strategy)
			assert.Equal(t, None, r.VerifiedBy)
			assert.Contains(t, r.Reason, "wrong result: the strategies disagree")
		}
	})
	t.Run("no base key", func(t *testing.T) {
		// Neither import nor generation: nothing runs, listed at best;
		// the token refused both.
		lt := nssFwd(t, fwd.Config{Faults: []fwd.Fault{
			{Func: "C_CreateObject", N: 1, From: true, CKR: pkcs11.CKR_TEMPLATE_INCONSISTENT},
			{Func: "C_GenerateKey", N: 1, From: true, CKR: pkcs11.CKR_TEMPLATE_INCONSISTENT}}})
		rep := lt.run(t, Options{Functions: []string{"aes-ecb"}})
		assert.Equal(t, "none", rep.Verification.Method)
		assert.False(t, rep.Incomplete)
		require.NotEmpty(t, rep.Verification.BaseKeys)
		b := rep.Verification.BaseKeys[0]
		assert.Equal(t, BaseKey{Type: "aes-128", Source: "none", Usage: []string{"CKA_DERIVE", "CKA_SIGN", "CKA_ENCRYPT", "CKA_UNWRAP"},
			ImportCKR: "CKR_TEMPLATE_INCONSISTENT", GenerateCKR: "CKR_TEMPLATE_INCONSISTENT",
			Reason: "import: create key: C_CreateObject: CKR_TEMPLATE_INCONSISTENT; generate: generate base key: C_GenerateKey: CKR_TEMPLATE_INCONSISTENT"}, b)
		for _, r := range rep.Results {
			assert.Contains(t, []Status{Listed, Unavailable}, r.Status, r.Strategy)
			assert.Contains(t, r.Reason, "no aes-128 base key")
			assert.Zero(t, r.Calls)
		}
		assert.Equal(t, Listed, result(t, rep, "aes-ecb", "native").Status)
	})
}

// A token that unwraps in CTR mode (played by the forwarder): stream-unwrap
// runs and is verified.
func TestStreamUnwrapEmulated(t *testing.T) {
	lt := nssFwd(t, fwd.Config{EmulateStreamUnwrap: true})
	rep := lt.run(t, Options{Functions: []string{"aes-ecb", "aes-cbc"}})
	for _, fn := range encryptAES {
		r := result(t, rep, fn, "stream-unwrap")
		assert.Equal(t, Verified, r.Status, r.Reason)
		assert.Equal(t, KnownAnswer, r.VerifiedBy)
	}
}

// --list-only makes no object and runs nothing.
func TestListOnly(t *testing.T) {
	lt := nss(t)
	rep := lt.run(t, Options{ListOnly: true})
	assert.True(t, rep.ListOnly)
	assert.Equal(t, "none", rep.Verification.Method)
	assert.Empty(t, rep.Verification.BaseKeys)
	for _, r := range rep.Results {
		assert.Contains(t, []Status{Listed, Unavailable}, r.Status)
		assert.Zero(t, r.Calls)
		assert.Zero(t, r.MedianNS)
		assert.Equal(t, None, r.VerifiedBy)
	}
	assert.Equal(t, Listed, result(t, rep, "aes-ecb", "native").Status)
	su := result(t, rep, "aes-ecb", "stream-unwrap")
	assert.Equal(t, Unavailable, su.Status, "NSS lists CKM_AES_CTR without CKF_UNWRAP")
	assert.Contains(t, su.Reason, "the token lists CKM_AES_CTR without CKF_UNWRAP")
	u := result(t, rep, "des3-ecb", "cmac-unwrap")
	assert.Equal(t, Unavailable, u.Status)
	assert.Contains(t, u.Reason, "does not list CKM_DES3_CMAC")
}

func TestFunctionsCovered(t *testing.T) {
	rep := nss(t).run(t, Options{ListOnly: true})
	got := map[string]bool{}
	for _, r := range rep.Results {
		got[r.KDF] = true
	}
	for _, name := range derive.FunctionNames() {
		assert.True(t, got[name], "no result for %s", name)
	}
	strategies := map[string]bool{}
	for _, s := range derive.Strategies() {
		strategies[string(s)] = true
	}
	for _, r := range rep.Results {
		assert.True(t, strategies[r.Strategy], "unknown strategy %q", r.Strategy)
	}
}

func TestUnknownFunction(t *testing.T) {
	_, err := Run(context.Background(), nss(t).Tok, Options{Functions: []string{"aes-ecb", "aes-xts"}})
	assert.ErrorIs(t, err, derive.ErrInvalidInput)
	assert.ErrorContains(t, err, `unknown function "aes-xts"`)
}

func TestCancelled(t *testing.T) {
	lt := nss(t)
	before := lt.objects(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, lt.Tok, Options{})
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, before, lt.objects(t))
}

// The JSON form: versioned, with the fields the schema promises.
func TestJSONSchema(t *testing.T) {
	rep := nss(t).run(t, Options{Functions: []string{"aes-ecb", "aes-cbc-decrypt", "hkdf"}, Now: func() time.Time { return time.Unix(0, 0) }})
	var b bytes.Buffer
	require.NoError(t, rep.WriteJSON(&b))
	var doc map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &doc))
	for _, k := range []string{"schema_version", "generator", "time", "duration_ms", "token", "verification", "mechanisms", "results"} {
		assert.Contains(t, doc, k)
	}
	assert.NotContains(t, doc, "key")
	assert.NotContains(t, doc, "list_only")
	assert.Equal(t, float64(SchemaVersion), doc["schema_version"])
	assert.Equal(t, "1970-01-01T00:00:00Z", doc["time"])
	tok := doc["token"].(map[string]any)
	for _, k := range []string{"label", "manufacturer", "model", "serial", "firmware", "hardware", "slot", "flags", "session", "module"} {
		assert.Contains(t, tok, k)
	}
	assert.Equal(t, "2.40", tok["module"].(map[string]any)["pkcs11_version"])
	statuses := map[string]bool{"verified": true, "ran": true, "listed": true, "failed": true, "unavailable": true}
	by := map[string]bool{"known-answer": true, "cross-check": true, "none": true}
	results := doc["results"].([]any)
	require.NotEmpty(t, results)
	for _, x := range results {
		r := x.(map[string]any)
		for _, k := range []string{"kdf", "strategy", "status", "calls", "verified_by", "planned_calls", "key_type", "base_key", "needs", "mechanisms"} {
			assert.Contains(t, r, k)
		}
		assert.True(t, statuses[r["status"].(string)], r["status"])
		assert.True(t, by[r["verified_by"].(string)], r["verified_by"])
	}
	var back Report
	require.NoError(t, json.Unmarshal(b.Bytes(), &back))
	assert.Equal(t, *rep, back)
}

func TestTextAndMarkdown(t *testing.T) {
	rep := nss(t).run(t, Options{Functions: []string{"aes-ecb", "sp800-108-counter"}})
	var b bytes.Buffer
	require.NoError(t, rep.WriteText(&b))
	out := b.String()
	assert.Contains(t, out, `Token:        "NSS Generic Crypto Services", Mozilla Foundation NSS 3`)
	assert.Contains(t, out, "PKCS#11 2.40")
	assert.Regexp(t, `aes-ecb\s+native\s+verified\s+known-answer`, out)
	assert.Regexp(t, `aes-ecb\s+stream-unwrap\s+unavailable\s+none\s+-\s+-\s+CKA_UNWRAP\s+C_UnwrapKey: CKR_MECHANISM_INVALID; CKM_AES_CTR lacks CKF_UNWRAP`, out)
	assert.Regexp(t, `sp800-108-counter aes-cmac\s+native\s+verified`, out)
	assert.Regexp(t, `CKM_AES_ECB_ENCRYPT_DATA\s+encrypt-data\s+yes\s+derive`, out)

	b.Reset()
	require.NoError(t, rep.WriteMarkdown(&b))
	md := b.String()
	assert.True(t, strings.HasPrefix(md, "# Mozilla Foundation NSS 3: in-token key derivation\n"))
	assert.Contains(t, md, "| PKCS#11 version | 2.40 |")
	assert.Contains(t, md, "| `aes-ecb` | `native` | **verified** | known-answer |")
	assert.Contains(t, md, "| `aes-ecb` | `stream-unwrap` | unavailable | none | - | - | CKA_UNWRAP | C_UnwrapKey: CKR_MECHANISM_INVALID; CKM_AES_CTR lacks CKF_UNWRAP |")
	assert.Contains(t, md, "| `CKM_AES_ECB_ENCRYPT_DATA` | encrypt-data | yes | derive | 1-32 |")
}

// A full report, from opening the token to closing it, takes well under
// two seconds on both lab tokens. How long it takes depends on the machine
// and its load (make test runs it under the race detector, next to other
// packages' tests), so the bound is checked only when P11DERIVE_TIMING=1, on
// a quiet machine; otherwise the test makes the report and logs its time.
func TestTiming(t *testing.T) {
	check := os.Getenv("P11DERIVE_TIMING") == "1"
	for _, tc := range []struct {
		name string
		lab  func(t *testing.T) *lab.Token
	}{
		{"softhsm2", func(t *testing.T) *lab.Token { l := lab.SoftHSM2(t); l.Setenv(t); return l }},
		{"nss", func(t *testing.T) *lab.Token { return lab.NSS(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tc.lab(t)
			lab.Open(t, l) // initialised outside the timing, as a process would be once
			start := time.Now()
			cfg := derive.Config{Module: l.Module, InitArgs: l.InitArgs, Slot: &l.SlotID}
			if l.Login {
				cfg.PIN = l.PIN
			}
			tok, err := derive.Open(cfg)
			require.NoError(t, err)
			rep, err := Run(context.Background(), tok, Options{})
			require.NoError(t, err)
			var b bytes.Buffer
			require.NoError(t, rep.WriteText(&b))
			tok.Close()
			elapsed := time.Since(start)
			t.Logf("%s: full report in %v (Run: %d ms, %d results: %s)", tc.name, elapsed, rep.DurationMS, len(rep.Results), rep.summary())
			if check {
				assert.Less(t, elapsed, 2*time.Second)
			}
		})
	}
}
