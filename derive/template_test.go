package derive

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The template cache is pure logic, tested directly (what tokens make of
// the templates is tested on them: TestWeakTemplates, the secrets tests).

func TestTemplateCacheBuildsEachShapeOnce(t *testing.T) {
	var c templateCache
	var builds atomic.Int32
	build := func(sh templateShape) []*pkcs11.Attribute {
		builds.Add(1)
		return []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, sh.kt.n)}
	}
	a := templateShape{kt: KeyAES128, usage: DefaultUsage}
	b := templateShape{kt: KeyAES256, usage: DefaultUsage, persistent: true}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sh := a
			if i%2 == 1 {
				sh = b
			}
			for j := 0; j < 100; j++ {
				c.get(sh, build)
			}
		}(i)
	}
	wg.Wait()
	assert.EqualValues(t, 2, builds.Load(), "one build per shape, however many callers")
	ta, tb := c.get(a, build), c.get(b, build)
	assert.Same(t, &ta[0], &c.get(a, build)[0], "the same template, shared")
	assert.NotSame(t, &ta[0], &tb[0])
	assert.EqualValues(t, 2, builds.Load())
}

func TestTemplateContents(t *testing.T) {
	value := func(tmpl []*pkcs11.Attribute, cka uint) []byte {
		for _, a := range tmpl {
			if a.Type == cka {
				return a.Value
			}
		}
		return nil
	}
	yes, no := []byte{1}, []byte{0}

	tok := &Token{}
	tmpl := tok.template(&Request{KeyType: KeyAES128})
	assert.Equal(t, yes, value(tmpl, pkcs11.CKA_SENSITIVE), "sensitive by default")
	assert.Equal(t, no, value(tmpl, pkcs11.CKA_EXTRACTABLE), "not extractable by default")
	assert.Equal(t, no, value(tmpl, pkcs11.CKA_TOKEN), "a session object by default")
	assert.Nil(t, value(tmpl, pkcs11.CKA_PRIVATE), "no CKA_PRIVATE without a login")
	assert.Equal(t, yes, value(tmpl, pkcs11.CKA_ENCRYPT), "DefaultUsage")
	assert.Equal(t, no, value(tmpl, pkcs11.CKA_DERIVE), "DefaultUsage")
	assert.NotNil(t, value(tmpl, pkcs11.CKA_VALUE_LEN), "AES keys say their length")
	assert.Nil(t, value(tmpl, pkcs11.CKA_LABEL))
	assert.Nil(t, value(tok.template(&Request{KeyType: KeyDES3}), pkcs11.CKA_VALUE_LEN), "DES3 keys have a fixed length")

	loggedIn := &Token{pin: "not used"}
	assert.Equal(t, yes, value(loggedIn.template(&Request{KeyType: KeyAES128}), pkcs11.CKA_PRIVATE))

	// Label and ID are appended to a copy: the shared template is unchanged,
	// and two requests of one shape do not see each other's label.
	shared := tok.template(&Request{KeyType: KeyAES128})
	n := len(shared)
	l1 := tok.template(&Request{KeyType: KeyAES128, Label: "one", ID: []byte{1}})
	l2 := tok.template(&Request{KeyType: KeyAES128, Label: "two"})
	require.Len(t, l1, n+2)
	assert.Equal(t, []byte("one"), value(l1, pkcs11.CKA_LABEL))
	assert.Equal(t, []byte{1}, value(l1, pkcs11.CKA_ID))
	assert.Equal(t, []byte("two"), value(l2, pkcs11.CKA_LABEL))
	assert.Len(t, tok.template(&Request{KeyType: KeyAES128}), n)

	ext := tok.template(&Request{KeyType: KeyAES128, Extractable: true, Persistent: true, Usage: UseDerive})
	assert.Equal(t, yes, value(ext, pkcs11.CKA_EXTRACTABLE))
	assert.Equal(t, yes, value(ext, pkcs11.CKA_TOKEN))
	assert.Equal(t, yes, value(ext, pkcs11.CKA_SENSITIVE), "sensitive even when extractable")
	assert.Equal(t, yes, value(ext, pkcs11.CKA_DERIVE))
	assert.Equal(t, no, value(ext, pkcs11.CKA_ENCRYPT), "only the usage asked for")
}

// TestUsageOf: every usage from its attribute, attributes of no usage
// left out, and back through the template's table.
func TestUsageOf(t *testing.T) {
	assert.Equal(t, UseDerive|UseSign|UseUnwrap, UsageOf([]uint{pkcs11.CKA_DERIVE, pkcs11.CKA_SIGN, pkcs11.CKA_UNWRAP}))
	assert.Equal(t, UseEncrypt|UseDecrypt|UseVerify|UseWrap, UsageOf([]uint{pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT, pkcs11.CKA_VERIFY, pkcs11.CKA_WRAP, pkcs11.CKA_LABEL}))
	assert.Zero(t, UsageOf(nil))
	for _, ua := range usageAttrs {
		assert.Equal(t, ua.u, UsageOf([]uint{ua.cka}))
	}
}
