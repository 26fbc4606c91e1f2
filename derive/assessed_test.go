package derive

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The assessment cache is pure logic, tested directly: a request of
// another shape, another base key (or one whose attributes changed) or a
// memo that kept or forgot a refusal since is assessed again
// (TestRowRefusalNotRemembered and the memo's tests check the same
// through Derive).
func TestAssessedCache(t *testing.T) {
	base := &Key{Handle: 7, Type: 0x1f, Len: 16, Derive: true, Sign: true, Unwrap: true}
	r := &Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: make([]byte, 16), KeyType: KeyAES128}
	k, ok := assessedKeyOf(base, r, 0)
	require.True(t, ok)
	var c assessedCache
	_, hit := c.get(k, nil)
	assert.False(t, hit, "nothing kept yet")
	cands := []assessment{{strategy: native{}}, {strategy: macUnwrap{}}}
	c.put(k, cands)
	got, hit := c.get(k, nil)
	require.True(t, hit)
	assert.Equal(t, cands, got)

	miss := func(what string, b *Key, r *Request, gen uint64) {
		t.Helper()
		k2, ok := assessedKeyOf(b, r, gen)
		require.True(t, ok, what)
		_, hit := c.get(k2, nil)
		assert.False(t, hit, what)
	}
	miss("a refusal kept or forgotten since", base, r, 1)
	other := *base
	miss("another base key", &other, r, 0)
	noSign := *base
	noSign.Sign = false
	miss("a base key without CKA_SIGN now", &noSign, r, 0)
	longer := *r
	longer.Data = make([]byte, 32)
	miss("longer data", base, &longer, 0)
	cbc := *r
	cbc.Function = Encrypt{Cipher: AES, Mode: CBC, IV: make([]byte, 16)}
	miss("another mode", base, &cbc, 0)
	kt := *r
	kt.KeyType = KeyAES256
	miss("another key type", base, &kt, 0)
	st := *r
	st.Strategy = MACUnwrap
	miss("a strategy asked for", base, &st, 0)

	hkdf := *r
	hkdf.Function = HKDF{}
	_, ok = assessedKeyOf(base, &hkdf, 0)
	assert.False(t, ok, "only Encrypt and Decrypt are kept")

	// Another shape replaces the one kept.
	k2, _ := assessedKeyOf(base, &longer, 0)
	c.put(k2, cands[:1])
	_, hit = c.get(k, nil)
	assert.False(t, hit)
	got, hit = c.get(k2, nil)
	require.True(t, hit)
	assert.Len(t, got, 1)
}
