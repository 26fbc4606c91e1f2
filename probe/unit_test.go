package probe

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/ref"
)

// The SP 800-108 reference, driven by a layout, reproduces the NIST CAVP
// vectors that internal/ref is anchored to: the layout machinery adds
// nothing wrong.
func TestSP800108RefLayouts(t *testing.T) {
	for _, v := range []struct {
		kdf, prf, layout, iv string
		out                  derive.KeyType
		ki, fixed, want      string
	}{
		{"sp800-108-counter", "hmac-sha256", "counter:32,data", "", derive.KeyAES128,
			"dd1d91b7d90b2bd3138533ce92b272fbf8a369316aefe242e659cc0ae238afe0",
			"01322b96b30acd197979444e468e1c5c6859bf1b1cf951b7e725303e237e46b864a145fab25e517b08f8683d0315bb2911d80a0e8aba17f3b413faac",
			"10621342bfb0fd40046c0e29f2cfdbf0"},
		{"sp800-108-counter", "aes-cmac", "counter:32,data", "", derive.KeyAES128,
			"c10b152e8c97b77e18704e0f0bd38305",
			"98cd4cbbbebe15d17dc86e6dbad800a2dcbd64f7c7ad0e78e9cf94ffdba89d03e97eadf6c4f7b806caf52aa38f09d0eb71d71f497bcc6906b48d36c4",
			"26faf61908ad9ee881b8305c221db53f"},
		{"sp800-108-feedback", "aes-cmac", "chain,counter:16,data", "", derive.KeyGeneric(64),
			"d7f5fa7551645de0b36aecd46565f954",
			"fb5294ed40a0e4aa70a7be13913070a4c5cfc05f89b9f7dd26a493b8c63889c7c3b0b60dd6d598ffa296a426224c727a501946",
			"7164471f559812581a53aaf7fb6d6c53a1293115cda873887efcc7ce6b3a026b2d19f0d38db8590e218a2676df88f53cab3313ed63bd1e4828f3c066ea5eb1fd"},
		{"sp800-108-feedback", "aes-cmac", "chain,data", "28dc945cb8337ab5336c3e9b5bad21c7", derive.KeyGeneric(64),
			"5c996c922f65de97d4408373229814c6",
			"62afe5fed91e797221a854336b0aadd8a05ad0e3c8345729897b2efcec5a1178a2fa4c063007b67a7015e0d6b7271ea8d86b44",
			"88a9aae193abdd3fe8143bab66014ae41dc2d12ea9d08f5871588fc5d827924eb9942989d7a36d4b3b107997566472cad5942bd13cb5cff32b9dae30f1bb6300"},
	} {
		s := &spec{kdf: v.kdf, params: map[string]string{"prf": v.prf, "layout": v.layout}, data: unhex(v.fixed), out: v.out}
		if v.iv != "" {
			s.params["iv"] = v.iv
		}
		s.ref = sp800108Ref(s, map[string]ref.PRF{"hmac-sha256": ref.HMACSHA256, "aes-cmac": ref.AESCMAC}[v.prf])
		got, err := s.ref(unhex(v.ki))
		require.NoError(t, err, v.layout)
		assert.Equal(t, v.want, hex.EncodeToString(got), v.kdf+" "+v.layout)
	}
	// The default layouts: [i]_32 || data || [L]_32, and K(i-1) before it
	// in feedback mode; little-endian and literal segments too.
	s := &spec{kdf: "sp800-108-counter", params: map[string]string{"prf": "hmac-sha256", "layout": "hex:aa,counter:8:le,data,dkm:16:le"}, data: []byte{1}, out: derive.KeyAES128}
	got, err := sp800108Ref(s, ref.HMACSHA256)(make([]byte, 32))
	require.NoError(t, err)
	want, _ := ref.HMACSHA256.MAC(make([]byte, 32), []byte{0xaa, 1, 1, 128, 0})
	assert.Equal(t, want[:16], got)
}

func TestSpecs(t *testing.T) {
	all := specs(nil)
	names := map[string]int{}
	for _, s := range all {
		names[s.kdf]++
		assert.NoError(t, s.err, s.kdf)
		assert.NotNil(t, s.ref, s.kdf)
		assert.Equal(t, derive.KeyAES128, s.out)
	}
	for _, n := range derive.FunctionNames() {
		assert.Positive(t, names[n], n)
	}
	assert.Equal(t, 4, names["sp800-108-counter"])
	assert.Equal(t, 3, names["hkdf"])
	only := specs([]string{"AES-ECB", " des-cbc "})
	require.Len(t, only, 2)
	assert.Equal(t, "aes-ecb", only[0].kdf)
	assert.Equal(t, map[string]string{"iv": ivDES}, only[1].params)
	assert.Equal(t, baseDES, only[1].base)

	// A function the probe does not know: tried with AES, cross-check only.
	u := specsFor("aes-xts")
	require.Len(t, u, 1)
	assert.Nil(t, u[0].ref)
	assert.Equal(t, baseAES, u[0].base)
	_, _, _, ok := blockFunction("aes-ofb")
	assert.False(t, ok)
	_, _, _, ok = blockFunction("aria-ecb")
	assert.False(t, ok)
	c, m, d, ok := blockFunction("des3-cbc-decrypt")
	assert.Equal(t, []any{"des3", "cbc", true, true}, []any{c, m, d, ok})
}

func TestCrossCheckLogic(t *testing.T) {
	mk := func(strategy string, kcv string) run {
		r := run{res: &Result{Strategy: strategy, Status: Ran, VerifiedBy: None}}
		if kcv != "" {
			r.kcv = unhex(kcv)
		} else {
			r.res.Status = Failed
		}
		return r
	}
	runs := []run{mk("native", "aabbcc"), mk("mac-unwrap", "aabbcc"), mk("stream-unwrap", "")}
	crossCheck(runs)
	assert.Equal(t, Verified, runs[0].res.Status)
	assert.Equal(t, CrossCheck, runs[1].res.VerifiedBy)
	assert.Equal(t, Failed, runs[2].res.Status)

	runs = []run{mk("native", "aabbcc"), mk("mac-unwrap", "ddeeff"), mk("cmac-unwrap", "ddeeff")}
	crossCheck(runs)
	for _, r := range runs {
		assert.Equal(t, Failed, r.res.Status, "no majority vote")
		assert.True(t, strings.HasPrefix(r.res.Reason, "wrong result"))
	}
	runs = []run{mk("unwrap", "aabbcc")}
	crossCheck(runs)
	assert.Equal(t, Ran, runs[0].res.Status)
	assert.Contains(t, runs[0].res.Reason, "no other strategy")
}

func TestHelpers(t *testing.T) {
	assert.Equal(t, "CKR_MECHANISM_INVALID", ckrString(pkcs11.CKR_MECHANISM_INVALID))
	assert.Equal(t, "CKR(0x7777777)", ckrString(0x7777777))
	assert.Equal(t, "CKR_DEVICE_ERROR", ckrName(&derive.TokenError{Call: "C_Sign", Err: pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)}))
	assert.Equal(t, "", ckrName(errors.New("x")))
	assert.Equal(t, "step: C_Sign: CKR_DEVICE_ERROR", trim(&derive.TokenError{Step: "step", Call: "C_Sign", Err: pkcs11.Error(pkcs11.CKR_DEVICE_ERROR)}))
	assert.Equal(t, int64(2), median([]time.Duration{3, 1, 2}))
	assert.Equal(t, int64(2), median([]time.Duration{1, 3, 2, 1000}))
	assert.Equal(t, int64(0), median(nil))
	assert.Equal(t, "-", duration(0))
	assert.Equal(t, "12µs", duration(12345))
	assert.Equal(t, "1.5ms", duration(1500000))
	assert.Equal(t, "2.5s", duration(2500000000))
	assert.Equal(t, "sp800-108-counter aes-cmac", displayName("sp800-108-counter", map[string]string{"prf": "aes-cmac", "iv": "00"}))
	assert.Equal(t, "aes-cbc", displayName("aes-cbc", map[string]string{"iv": "00"}))
	assert.Equal(t, "CKM_AES_KEY_WRAP_KWP", mechName(ckmAESKeyWrapKWP))
	assert.Equal(t, "CKM_SP800_108_COUNTER_KDF", mechName(ckmSP800108Counter))
	// The flags come from derive's assessment (StrategyPlan.Flags); the
	// probe only names them.
	for flag, use := range map[uint]string{
		pkcs11.CKF_DERIVE: "derive", pkcs11.CKF_SIGN: "sign", pkcs11.CKF_UNWRAP: "unwrap", pkcs11.CKF_ENCRYPT: "encrypt",
		pkcs11.CKF_UNWRAP | pkcs11.CKF_ENCRYPT: "encrypt+unwrap", 0: "",
	} {
		assert.Equal(t, use, useOf(flag), "%#x", flag)
	}
	assert.Equal(t, "CKF_ENCRYPT and CKF_UNWRAP", ckfNames(pkcs11.CKF_UNWRAP|pkcs11.CKF_ENCRYPT))
	assert.Equal(t, []string{"encrypt", "unwrap", "derive"}, mechFlags(pkcs11.CKF_ENCRYPT|pkcs11.CKF_UNWRAP|pkcs11.CKF_DERIVE))
	assert.Equal(t, []string{"rng", "login-required"}, tokenFlags(pkcs11.CKF_RNG|pkcs11.CKF_LOGIN_REQUIRED))
	assert.Equal(t, "CKS(9)", sessionState(9))
	assert.Equal(t, "CKA(0x9999)", attrName(0x9999))
}
