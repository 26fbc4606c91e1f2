package probe

import (
	"bytes"
	"context"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/lab"
)

func uses(t *testing.T, kr *KeyReport) map[string]KeyUse {
	t.Helper()
	out := map[string]KeyUse{}
	for _, u := range kr.Uses {
		k := displayName(u.KDF, u.Params) + "/" + u.Strategy
		_, dup := out[k]
		assert.False(t, dup, k)
		out[k] = u
	}
	return out
}

// readKey reads every attribute the probe could touch, to prove it
// changed none.
func readKey(t *testing.T, lt *labToken, label string) *derive.Key {
	t.Helper()
	k, err := lt.Tok.FindKey(context.Background(), label)
	require.NoError(t, err)
	return k
}

func unwrapTemplate(t *testing.T) *pkcs11.Attribute {
	t.Helper()
	return lab.ArrayAttribute(t, pkcs11.CKA_UNWRAP_TEMPLATE, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false)})
}

// A key that may MAC and unwrap, with an unwrap template forcing sensitive,
// non-extractable keys: SoftHSM2 keeps and gives back the template.
func TestKeyWithUnwrapTemplate(t *testing.T) {
	lt := softhsm2(t)
	h := lab.ImportSecretKey(t, lt.ctx, lt.sess, pkcs11.CKK_AES, randomish(16), "probe-tmpl", unwrapTemplate(t),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
	defer lt.ctx.DestroyObject(lt.sess, h)
	before := readKey(t, lt, "probe-tmpl")
	rep := lt.run(t, Options{KeyLabel: "probe-tmpl", Functions: []string{"aes-ecb", "aes-ecb-decrypt", "hkdf"}})
	assert.Equal(t, before, readKey(t, lt, "probe-tmpl"), "the key changed")
	kr := rep.Key
	require.NotNil(t, kr)
	assert.Equal(t, "probe-tmpl", kr.Label)
	assert.Equal(t, "aes", kr.Type)
	assert.Equal(t, 16, kr.Len)
	assert.False(t, kr.TokenObject)
	assert.True(t, kr.Attributes["CKA_SIGN"])
	assert.True(t, kr.Attributes["CKA_SENSITIVE"])
	assert.False(t, kr.Attributes["CKA_EXTRACTABLE"])
	assert.True(t, kr.Attributes["CKA_MODIFIABLE"])
	assert.Equal(t, UnwrapTemplate{State: "present", Attributes: map[string]string{"CKA_SENSITIVE": "true", "CKA_EXTRACTABLE": "false"},
		ForcesSensitive: true, ForcesNotExtractable: true}, kr.UnwrapTemplate)
	assert.True(t, kr.MACUnwrapSafe)
	u := uses(t, kr)
	assert.Equal(t, KeyUse{KDF: "aes-ecb", Strategy: "native", Usable: "now", TokenStatus: Verified}, u["aes-ecb/native"])
	assert.Equal(t, "no", u["aes-ecb/mac-unwrap"].Usable, "SoftHSM2 has no MAC_GENERAL")
	assert.Equal(t, Unavailable, u["aes-ecb/mac-unwrap"].TokenStatus)
	assert.Contains(t, u["aes-ecb/mac-unwrap"].Reason, "unavailable on this token: ")
	assert.Equal(t, "no", u["aes-ecb-decrypt/unwrap"].Usable)
	assert.Len(t, u, 5, "hkdf takes no AES key")
	assert.Empty(t, kr.Notes)
}

// A key without CKA_DERIVE and without a template on NSS softoken: native
// with CKA_DERIVE set, MAC-unwrap now, and a warning that MAC-unwrap is not
// safe with it. NSS keeps the template of a session object as the bytes it
// was given, which the probe refuses to follow.
func TestKeyWithoutDerive(t *testing.T) {
	lt := nss(t)
	h := lab.ImportSecretKey(t, lt.ctx, lt.sess, pkcs11.CKK_AES, randomish(16), "probe-noderive",
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false))
	defer lt.ctx.DestroyObject(lt.sess, h)
	before := readKey(t, lt, "probe-noderive")
	rep := lt.run(t, Options{KeyLabel: "probe-noderive", Functions: []string{"aes-ecb", "aes-cbc-decrypt", "sp800-108-counter"}})
	assert.Equal(t, before, readKey(t, lt, "probe-noderive"), "the key changed")
	kr := rep.Key
	assert.Equal(t, UnwrapTemplate{State: "absent"}, kr.UnwrapTemplate)
	assert.False(t, kr.MACUnwrapSafe)
	u := uses(t, kr)
	assert.Equal(t, KeyUse{KDF: "aes-ecb", Strategy: "native", Usable: "with-changes", Set: []string{"CKA_DERIVE"}, TokenStatus: Verified}, u["aes-ecb/native"])
	assert.Equal(t, KeyUse{KDF: "aes-ecb", Strategy: "mac-unwrap", Usable: "now", TokenStatus: Verified}, u["aes-ecb/mac-unwrap"])
	assert.Equal(t, KeyUse{KDF: "aes-ecb", Strategy: "cmac-unwrap", Usable: "with-changes", Set: []string{"CKA_ENCRYPT"}, TokenStatus: Verified}, u["aes-ecb/cmac-unwrap"])
	assert.Equal(t, "no", u["aes-ecb/stream-unwrap"].Usable)
	assert.Equal(t, Unavailable, u["aes-ecb/stream-unwrap"].TokenStatus, "NSS lists CKM_AES_CTR without CKF_UNWRAP")
	assert.Equal(t, "now", u["aes-cbc-decrypt/unwrap"].Usable)
	assert.Equal(t, map[string]string{"iv": ivAES}, u["aes-cbc-decrypt/unwrap"].Params)
	// The HMAC PRFs take an AES key too; the probe ran them with a generic
	// secret, and says so.
	c := u["sp800-108-counter hmac-sha256/native"]
	assert.Equal(t, "with-changes", c.Usable)
	assert.Equal(t, "generic-32", c.ProbedWith)
	assert.Equal(t, "", u["sp800-108-counter aes-cmac/native"].ProbedWith)
	require.Len(t, kr.Notes, 1)
	assert.Contains(t, kr.Notes[0], "CKA_UNWRAP_TEMPLATE forcing CKA_SENSITIVE=true and CKA_EXTRACTABLE=false")

	var b bytes.Buffer
	require.NoError(t, rep.WriteText(&b))
	text := b.String()
	assert.Contains(t, text, `Key "probe-noderive": aes, 16 bytes, token object false`)
	assert.Contains(t, text, "  unwrap template: absent\n")
	assert.Regexp(t, `aes-ecb +native +with-changes +CKA_DERIVE +verified`, text)
	assert.Regexp(t, `sp800-108-counter hmac-sha256 +native +with-changes +CKA_DERIVE +verified +probed with a generic-32 key`, text)
	assert.Contains(t, text, "Note: MAC-unwrap lets this key both MAC and unwrap")
	b.Reset()
	require.NoError(t, rep.WriteMarkdown(&b))
	md := b.String()
	assert.Contains(t, md, "## Key `probe-noderive`")
	assert.Contains(t, md, "| `aes-ecb` | `native` | with-changes | CKA_DERIVE | verified |  |")
	assert.Contains(t, md, "> MAC-unwrap lets this key")

	t.Run("template", func(t *testing.T) {
		h := lab.ImportSecretKey(t, lt.ctx, lt.sess, pkcs11.CKK_AES, randomish(16), "probe-nsstmpl", unwrapTemplate(t))
		defer lt.ctx.DestroyObject(lt.sess, h)
		rep := lt.run(t, Options{KeyLabel: "probe-nsstmpl", Functions: []string{"aes-ecb"}})
		assert.Equal(t, "unreadable", rep.Key.UnwrapTemplate.State)
		assert.Contains(t, rep.Key.UnwrapTemplate.Reason, "cannot be read safely")
		assert.False(t, rep.Key.MACUnwrapSafe)
	})
	t.Run("list only", func(t *testing.T) {
		rep, err := Run(context.Background(), lt.Tok, Options{KeyLabel: "probe-noderive", ListOnly: true})
		require.NoError(t, err)
		assert.Equal(t, "absent", rep.Key.UnwrapTemplate.State)
		// List-only: judged from the mechanism list.
		assert.Equal(t, "now", uses(t, rep.Key)["aes-ecb/mac-unwrap"].Usable)
		assert.Equal(t, Listed, uses(t, rep.Key)["aes-ecb/mac-unwrap"].TokenStatus)
	})
}

// A key that cannot be modified: the changes need a new key.
func TestKeyNotModifiable(t *testing.T) {
	lt := softhsm2(t)
	h := lab.ImportSecretKey(t, lt.ctx, lt.sess, pkcs11.CKK_DES3, baseValues[baseDES3], "probe-fixed",
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false), pkcs11.NewAttribute(pkcs11.CKA_MODIFIABLE, false))
	defer lt.ctx.DestroyObject(lt.sess, h)
	rep := lt.run(t, Options{KeyLabel: "probe-fixed", Functions: []string{"des3-ecb"}})
	u := uses(t, rep.Key)["des3-ecb/native"]
	assert.Equal(t, "with-changes", u.Usable)
	assert.Equal(t, []string{"CKA_DERIVE"}, u.Set)
	assert.Contains(t, u.Reason, "CKA_MODIFIABLE is false")
	assert.False(t, rep.Key.Attributes["CKA_MODIFIABLE"])
}

func TestKeyErrors(t *testing.T) {
	lt := nss(t)
	_, err := Run(context.Background(), lt.Tok, Options{KeyLabel: "probe-no-such-key", Functions: []string{"aes-ecb"}})
	assert.ErrorIs(t, err, derive.ErrNotFound)

	// A generic secret: only the HMAC-based functions.
	h := lab.ImportSecretKey(t, lt.ctx, lt.sess, pkcs11.CKK_GENERIC_SECRET, randomish(32), "probe-generic",
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false))
	defer lt.ctx.DestroyObject(lt.sess, h)
	rep := lt.run(t, Options{KeyLabel: "probe-generic", Functions: []string{"aes-ecb", "hkdf"}})
	u := uses(t, rep.Key)
	assert.Len(t, u, 3)
	assert.Equal(t, KeyUse{KDF: "hkdf", Params: map[string]string{"hash": "sha256", "salt": saltKDF}, Strategy: "native", Usable: "now", TokenStatus: Verified}, u["hkdf sha256/native"])
	// A key no function takes.
	rep = lt.run(t, Options{KeyLabel: "probe-generic", Functions: []string{"aes-ecb"}})
	assert.Empty(t, rep.Key.Uses)
	assert.Equal(t, []string{"none of the functions probed takes a generic key"}, rep.Key.Notes)
}

// randomish is a key value that is not one of the probe's own.
func randomish(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0xa5 ^ i*7)
	}
	return b
}
