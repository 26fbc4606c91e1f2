package derive

import (
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// DK's template, one of the Token's parts: built once per shape (key type,
// persistence, extractability, usage) and shared, read without a lock or an
// allocation on every derivation.

// template is DK's attribute template: safe unless asked otherwise.
//
// Templates are built once per shape and shared (they are only read); the
// label and ID, which vary per key, are appended to a copy.
func (t *Token) template(r *Request) []*pkcs11.Attribute {
	usage := r.Usage
	if usage == 0 {
		usage = DefaultUsage
	}
	shape := templateShape{r.KeyType, r.Persistent, r.Extractable, usage}
	tmpl := t.templates.get(shape, t.buildTemplate)
	if r.Label != "" {
		tmpl = append(tmpl[:len(tmpl):len(tmpl)], pkcs11.NewAttribute(pkcs11.CKA_LABEL, r.Label))
	}
	if len(r.ID) > 0 {
		tmpl = append(tmpl[:len(tmpl):len(tmpl)], pkcs11.NewAttribute(pkcs11.CKA_ID, r.ID))
	}
	return tmpl
}

// templateCache holds the templates built, by shape: a map replaced whole
// on each new shape (there are few), read without a lock or an allocation.
type templateCache struct {
	m  atomic.Pointer[map[templateShape][]*pkcs11.Attribute]
	mu sync.Mutex // one writer at a time
}

func (c *templateCache) get(sh templateShape, build func(templateShape) []*pkcs11.Attribute) []*pkcs11.Attribute {
	if m := c.m.Load(); m != nil {
		if tmpl, ok := (*m)[sh]; ok {
			return tmpl
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if tmpl, ok := (*old)[sh]; ok {
			return tmpl
		}
	}
	next := make(map[templateShape][]*pkcs11.Attribute, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	tmpl := build(sh)
	next[sh] = tmpl
	c.m.Store(&next)
	return tmpl
}

// templateShape is what a template depends on, but the label.
type templateShape struct {
	kt          KeyType
	persistent  bool
	extractable bool
	usage       Usage
}

func (t *Token) buildTemplate(sh templateShape) []*pkcs11.Attribute {
	r := &Request{KeyType: sh.kt, Persistent: sh.persistent, Extractable: sh.extractable}
	usage := sh.usage
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, r.KeyType.ckk),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, r.Persistent),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, r.Extractable),
	}
	if r.KeyType.ckk == pkcs11.CKK_AES || r.KeyType.ckk == pkcs11.CKK_GENERIC_SECRET {
		// The other types have a fixed length, and tokens refuse
		// CKA_VALUE_LEN for them.
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, r.KeyType.n))
	}
	if t.pin != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true))
	}
	for _, u := range usageAttrs {
		tmpl = append(tmpl, pkcs11.NewAttribute(u.cka, usage&u.u != 0))
	}
	return tmpl
}

// intermediateTemplate is the template of an intermediate key a strategy
// makes on the way to DK: a generic secret session object, sensitive, not
// extractable, that may only derive; of n bytes (CKA_VALUE_LEN), or of the
// token's length if n is 0.
func intermediateTemplate(n int) []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
	}
	if n > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, n))
	}
	return tmpl
}
