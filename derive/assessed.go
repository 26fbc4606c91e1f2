package derive

import (
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// assessedCache keeps the candidates Derive last computed, for the next
// request of the same shape: the same base key (and the attributes the
// assessment reads from it), function, key type, data length and
// strategy, and nothing refused or forgotten by the memo since. A batch
// derives every row with one base key and one request shape: its rows
// take the strategies as assessed once, and each is still tried, refused
// and remembered per row as before (the memo's generation changes with
// each refusal it keeps, and the next request assesses again).
//
// One shape is kept, read without a lock; another shape replaces it.
type assessedCache struct {
	last atomic.Pointer[assessedEntry]
}

type assessedEntry struct {
	key assessedKey
	n   int
	a   [8]assessment
}

// assessedKey is what an assessment under Auto depends on. Functions
// other than Encrypt and Decrypt are not cached (shape false).
type assessedKey struct {
	base    *Key
	handle  pkcs11.ObjectHandle
	typ     uint
	len     int
	attrs   uint16
	unknown int
	fn      fnShape
	kt      KeyType
	data    int
	st      Strategy
	gen     uint64
}

// fnShape is a function as its assessment sees it: kind (1 Encrypt, 2
// Decrypt), cipher, mode and whether it has an IV.
type fnShape struct {
	kind   uint8
	cipher Cipher
	mode   Mode
	iv     int
}

func assessedKeyOf(base *Key, r *Request, gen uint64) (assessedKey, bool) {
	var fs fnShape
	switch f := r.Function.(type) {
	case Encrypt:
		fs = fnShape{1, f.Cipher, f.Mode, len(f.IV)}
	case Decrypt:
		fs = fnShape{2, f.Cipher, f.Mode, len(f.IV)}
	default:
		return assessedKey{}, false
	}
	var attrs uint16
	for i, b := range [...]bool{base.Token, base.Private, base.Sensitive, base.Extractable, base.Derive, base.Sign,
		base.Verify, base.Encrypt, base.Decrypt, base.Wrap, base.Unwrap} {
		if b {
			attrs |= 1 << i
		}
	}
	return assessedKey{base: base, handle: base.Handle, typ: base.Type, len: base.Len, attrs: attrs,
		unknown: len(base.unknown), fn: fs, kt: r.KeyType, data: len(r.Data), st: r.Strategy, gen: gen}, true
}

// get appends the candidates kept for k to buf, if k's are kept.
func (c *assessedCache) get(k assessedKey, buf []assessment) ([]assessment, bool) {
	e := c.last.Load()
	if e == nil || e.key != k {
		return nil, false
	}
	return append(buf, e.a[:e.n]...), true
}

// put keeps the candidates computed for k.
func (c *assessedCache) put(k assessedKey, cands []assessment) {
	if len(cands) > 8 {
		return
	}
	if e := c.last.Load(); e != nil && e.key == k {
		return
	}
	e := &assessedEntry{key: k, n: len(cands)}
	copy(e.a[:], cands)
	c.last.Store(e)
}
