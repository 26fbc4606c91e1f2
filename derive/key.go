package derive

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// Key is a secret key object of a token, with the attributes p11derive
// read from it. Reading them never reads CKA_VALUE.
type Key struct {
	Handle pkcs11.ObjectHandle
	Label  string
	ID     []byte
	Type   uint // CKK_*
	// Len is CKA_VALUE_LEN in bytes, or the type's fixed length (DES,
	// DES2, DES3) when the token does not give it; 0 if unknown (some
	// tokens give no CKA_VALUE_LEN for AES keys: p11derive then lets the
	// token decide, refusing nothing for the length it cannot see).
	Len int

	// The boolean attributes, as the token gave them.
	Token, Private, Sensitive, Extractable bool
	AlwaysSensitive, NeverExtractable      bool
	Derive, Sign, Verify, Encrypt, Decrypt bool
	Wrap, Unwrap                           bool

	// Warnings are facts about how the token made the key, when p11derive
	// made it: a key the token made weaker than asked, which p11derive
	// tightened (see Request.StrictAttributes).
	Warnings []string

	unknown []uint // boolean attributes the token did not give
}

// Name names k in messages: its label, quoted, or its handle when it has
// no label. The schemes' errors name keys by it.
func (k *Key) Name() string { return k.name() }

func (k *Key) name() string {
	if k.Label != "" {
		return fmt.Sprintf("%q", k.Label)
	}
	return fmt.Sprintf("handle %d", k.Handle)
}

// known reports whether the token gave the boolean attribute cka when the
// key was read (a false field may also mean "not given").
func (k *Key) known(cka uint) bool {
	for _, u := range k.unknown {
		if u == cka {
			return false
		}
	}
	return true
}

// Cipher is the block cipher the key is a key of, or 0 for other types.
func (k *Key) Cipher() Cipher {
	switch k.Type {
	case pkcs11.CKK_AES:
		return AES
	case pkcs11.CKK_DES3, pkcs11.CKK_DES2:
		return DES3
	case pkcs11.CKK_DES:
		return DES
	}
	return 0
}

// keyAttrs are the attributes read from every secret key. CKA_VALUE_LEN is
// read apart, only for key types that have it: asking a DES key for it
// makes some tokens (NSS) fail the whole C_GetAttributeValue.
var keyAttrs = []uint{
	pkcs11.CKA_CLASS, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_LABEL, pkcs11.CKA_ID,
	pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
	pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE,
	pkcs11.CKA_DERIVE, pkcs11.CKA_SIGN, pkcs11.CKA_VERIFY, pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT,
	pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP,
}

// FindKey returns the one secret key whose CKA_LABEL is label: Find with
// a Selector of that label.
func (t *Token) FindKey(ctx context.Context, label string) (*Key, error) {
	if label == "" {
		return nil, inputErr("key", "no key label given")
	}
	return t.Find(ctx, Selector{Label: label})
}

// Key reads the attributes of the secret key with handle h.
func (t *Token) Key(ctx context.Context, h pkcs11.ObjectHandle) (*Key, error) {
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	return readKey(s, h, 0)
}

// ownKeyAttrs are the attributes read back from a key p11derive just made:
// all of fixed size (its label is the one p11derive gave it).
var ownKeyAttrs = []uint{
	pkcs11.CKA_CLASS, pkcs11.CKA_KEY_TYPE,
	pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
	pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE,
	pkcs11.CKA_DERIVE, pkcs11.CKA_SIGN, pkcs11.CKA_VERIFY, pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT,
	pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP,
}

// ownKeyAttrsWithLen is ownKeyAttrs then CKA_VALUE_LEN: its prefix serves
// the key types without a length. The sizes are computed once.
var (
	ownKeyAttrsWithLen = append(ownKeyAttrs[:len(ownKeyAttrs):len(ownKeyAttrs)], pkcs11.CKA_VALUE_LEN)
	ownKeyAttrSizes    = fixedSizes(ownKeyAttrsWithLen)
)

// readOwnKey reads back the attributes of a key p11derive just made with
// type kt and label label: one C_GetAttributeValue on the fast path. what
// names the key in errors ("DK", "base key").
func readOwnKey(s *session, h pkcs11.ObjectHandle, kt KeyType, label, what string) (*Key, error) {
	k := new(Key)
	if err := readOwnKeyInto(k, s, h, kt, label, what); err != nil {
		return nil, err
	}
	return k, nil
}

// readOwnKeyInto is readOwnKey into k, with no map: the values were read
// with the call that made DK (s.ahead), or are read now onto the stack.
func readOwnKeyInto(k *Key, s *session, h pkcs11.ObjectHandle, kt KeyType, label, what string) error {
	n := len(ownKeyAttrs)
	if hasValueLen(kt.ckk) {
		n++
	}
	step := readStep(what)
	var v *fixedValues
	var local fixedValues
	if a := &s.ahead; a.done && a.n == n && a.h == h {
		// Read in the crossing that made DK (session.deriveKeyData).
		a.done = false
		if err := s.fixedResult(step, a.rv); err != nil {
			return err
		}
		v = &a.v
	} else {
		v = &local
		if err := s.fixedInto(step, h, ownKeyAttrsWithLen[:n], ownKeyAttrSizes[:n], v); err != nil {
			return err
		}
	}
	for i := n; i < len(ownKeyAttrsWithLen); i++ {
		v.lens[i] = -1
	}
	if err := keyInto(k, h, v, kt.ckk); err != nil {
		return err
	}
	k.Label = label
	return nil
}

// ownKeyIndex is the index of cka in ownKeyAttrsWithLen, or -1.
func ownKeyIndex(cka uint) int {
	switch cka {
	case pkcs11.CKA_CLASS:
		return 0
	case pkcs11.CKA_KEY_TYPE:
		return 1
	case pkcs11.CKA_TOKEN:
		return 2
	case pkcs11.CKA_PRIVATE:
		return 3
	case pkcs11.CKA_SENSITIVE:
		return 4
	case pkcs11.CKA_EXTRACTABLE:
		return 5
	case pkcs11.CKA_ALWAYS_SENSITIVE:
		return 6
	case pkcs11.CKA_NEVER_EXTRACTABLE:
		return 7
	case pkcs11.CKA_DERIVE:
		return 8
	case pkcs11.CKA_SIGN:
		return 9
	case pkcs11.CKA_VERIFY:
		return 10
	case pkcs11.CKA_ENCRYPT:
		return 11
	case pkcs11.CKA_DECRYPT:
		return 12
	case pkcs11.CKA_WRAP:
		return 13
	case pkcs11.CKA_UNWRAP:
		return 14
	case pkcs11.CKA_VALUE_LEN:
		return 15
	}
	return -1
}

// readStep is the step of reading back a new key's attributes: constant
// strings on the hot path.
func readStep(what string) string {
	switch what {
	case "DK":
		return "read DK's attributes"
	case "base key":
		return "read the new base key's attributes"
	}
	return "read the new key's attributes"
}

// readKey reads a secret key's attributes. ckk is the key's type if the
// caller knows it (a key it just made), else 0.
func readKey(s *session, h pkcs11.ObjectHandle, ckk uint) (*Key, error) {
	attrs := keyAttrs
	if hasValueLen(ckk) {
		attrs = append(attrs[:len(attrs):len(attrs)], pkcs11.CKA_VALUE_LEN)
	}
	v, err := s.attributes("read key attributes", h, attrs...)
	if err != nil {
		return nil, err
	}
	if ckk == 0 {
		typ, _ := ulong(v[pkcs11.CKA_KEY_TYPE])
		if hasValueLen(typ) {
			l, err := s.attributes("read key length", h, pkcs11.CKA_VALUE_LEN)
			if err != nil {
				return nil, err
			}
			v[pkcs11.CKA_VALUE_LEN] = l[pkcs11.CKA_VALUE_LEN]
		}
	}
	return keyFrom(h, v, ckk)
}

// keyFrom makes a Key of the attribute values read from object h.
func keyFrom(h pkcs11.ObjectHandle, v map[uint][]byte, ckk uint) (*Key, error) {
	var fv fixedValues
	for i, cka := range ownKeyAttrsWithLen {
		b, ok := v[cka]
		switch {
		case !ok || b == nil:
			fv.lens[i] = -1
		case len(b) > len(fv.vals[i]):
			fv.lens[i] = tooLong // no fixed-size attribute's value: neither a CK_ULONG nor a CK_BBOOL
		default:
			fv.lens[i] = copy(fv.vals[i][:], b)
		}
	}
	k := new(Key)
	if err := keyInto(k, h, &fv, ckk); err != nil {
		return nil, err
	}
	k.Label = string(v[pkcs11.CKA_LABEL])
	k.ID = v[pkcs11.CKA_ID]
	return k, nil
}

// keyInto sets k to the Key of object h, but its label and ID, from the
// values of the attributes ownKeyAttrsWithLen in v (in that order): it
// keeps none of them.
func keyInto(k *Key, h pkcs11.ObjectHandle, v *fixedValues, ckk uint) error {
	*k = Key{Handle: h}
	get := func(cka uint) []byte { return v.value(ownKeyIndex(cka)) }
	if c, ok := ulong(get(pkcs11.CKA_CLASS)); !ok || c != pkcs11.CKO_SECRET_KEY {
		return &KeyError{Key: fmt.Sprintf("handle %d", h), Reason: ErrKeyType, Problem: "not a secret key"}
	}
	k.Type, _ = ulong(get(pkcs11.CKA_KEY_TYPE))
	if n, ok := ulong(get(pkcs11.CKA_VALUE_LEN)); ok {
		k.Len = int(n)
	} else {
		switch k.Type {
		case pkcs11.CKK_DES:
			k.Len = 8
		case pkcs11.CKK_DES2:
			k.Len = 16
		case pkcs11.CKK_DES3:
			k.Len = 24
		}
	}
	for _, b := range [...]struct {
		dst *bool
		cka uint
	}{
		{&k.Token, pkcs11.CKA_TOKEN}, {&k.Private, pkcs11.CKA_PRIVATE},
		{&k.Sensitive, pkcs11.CKA_SENSITIVE}, {&k.Extractable, pkcs11.CKA_EXTRACTABLE},
		{&k.AlwaysSensitive, pkcs11.CKA_ALWAYS_SENSITIVE}, {&k.NeverExtractable, pkcs11.CKA_NEVER_EXTRACTABLE},
		{&k.Derive, pkcs11.CKA_DERIVE}, {&k.Sign, pkcs11.CKA_SIGN}, {&k.Verify, pkcs11.CKA_VERIFY},
		{&k.Encrypt, pkcs11.CKA_ENCRYPT}, {&k.Decrypt, pkcs11.CKA_DECRYPT},
		{&k.Wrap, pkcs11.CKA_WRAP}, {&k.Unwrap, pkcs11.CKA_UNWRAP},
	} {
		var ok bool
		if *b.dst, ok = boolean(get(b.cka)); !ok {
			k.unknown = append(k.unknown, b.cka)
		}
	}
	return nil
}

// Destroy destroys the key object. Use it for derived keys the caller no
// longer needs; p11derive never destroys a base key.
func (t *Token) Destroy(ctx context.Context, k *Key) error {
	s, err := t.acquire(ctx)
	if err != nil {
		return err
	}
	defer t.release(s)
	if err := s.destroy("destroy key", k.Handle); err != nil {
		if te, ok := err.(*TokenError); ok {
			te.Step += " " + k.name() // named on failure only: no formatting on the hot path
		}
		return err
	}
	// Tokens reuse handles: what a token refused for this key must not
	// stick to the next key that gets its handle.
	t.memo.forget(k.Handle)
	return nil
}

// CheckValue computes the key's check value inside the token: the first 3
// bytes of E_key(0^n), encrypting one zero block with the key in ECB mode.
// It needs an AES, DES, DES2 or DES3 key with CKA_ENCRYPT.
func (t *Token) CheckValue(ctx context.Context, k *Key) ([]byte, error) {
	mech, n, err := checkValueMechanism(k)
	if err != nil {
		return nil, err
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	out, err := s.encrypt("check value", []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, k.Handle, make([]byte, n))
	if err != nil {
		return nil, err
	}
	if len(out) < 3 {
		return nil, s.fail("check value", "C_Encrypt", fmt.Errorf("%d bytes of output", len(out)))
	}
	return out[:3], nil
}

// checkValueMechanism is CheckValue's mechanism for k and k's block size,
// or why k has no check value by CheckValue.
func checkValueMechanism(k *Key) (mech uint, n int, err error) {
	mech, _, err = kcvMechanism(k, KCVECB)
	if err != nil {
		return 0, 0, &KeyError{Key: k.name(), Reason: ErrKeyType, Problem: fmt.Sprintf("no check value for a %s key (AES and DES keys only)", ckm.KeyType(k.Type))}
	}
	if !k.Encrypt {
		return 0, 0, &KeyError{Key: k.name(), Reason: ErrMissingAttribute, Problem: "a check value needs CKA_ENCRYPT"}
	}
	return mech, k.Cipher().BlockSize(), nil
}

// Generate makes a new secret key inside the token with C_GenerateKey, as
// spec says. The key is read back and checked as a derived key is: one the
// token made weaker only in CKA_SENSITIVE/CKA_EXTRACTABLE is tightened
// (the key's Warnings say so) unless spec.StrictAttributes. On every
// failure after C_GenerateKey the key is destroyed; if that fails too, the
// error says so (a *LeftBehindError).
func (t *Token) Generate(ctx context.Context, spec KeySpec) (*Key, error) {
	r, err := t.specRequest(spec)
	if err != nil {
		return nil, err
	}
	var mech uint
	switch spec.Type.ckk {
	case pkcs11.CKK_AES:
		mech = pkcs11.CKM_AES_KEY_GEN
	case pkcs11.CKK_DES:
		mech = pkcs11.CKM_DES_KEY_GEN
	case pkcs11.CKK_DES2:
		mech = pkcs11.CKM_DES2_KEY_GEN
	case pkcs11.CKK_DES3:
		mech = pkcs11.CKM_DES3_KEY_GEN
	case pkcs11.CKK_GENERIC_SECRET:
		mech = pkcs11.CKM_GENERIC_SECRET_KEY_GEN
	}
	// C_GenerateKey takes no CKA_KEY_TYPE/CKA_CLASS on some tokens; both are
	// implied by the mechanism.
	gen := without(t.template(r), pkcs11.CKA_CLASS, pkcs11.CKA_KEY_TYPE)
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	h, err := s.generateKey("generate base key", mech, gen)
	if err != nil {
		return nil, err
	}
	return s.keep(h, r, "base key")
}

// hasValueLen reports whether keys of type ckk have CKA_VALUE_LEN: those
// whose length varies.
func hasValueLen(ckk uint) bool {
	switch ckk {
	case pkcs11.CKK_DES, pkcs11.CKK_DES2, pkcs11.CKK_DES3:
		return false
	}
	return ckk != 0
}

// BaseKeyWarnings says what in k's attributes weakens it as a base key:
// CKA_ENCRYPT lets anyone with a session compute every DK in the clear
// with C_Encrypt of the derivation data (DK = E(data, K) is an encryption),
// and CKA_EXTRACTABLE lets K itself be wrapped out of the token. A base
// key needs CKA_DERIVE (native) or CKA_SIGN and CKA_UNWRAP (mac-unwrap),
// never these two; see SECURITY.md. The warnings name attributes only.
func BaseKeyWarnings(k *Key) []string {
	var w []string
	if k == nil {
		return nil
	}
	if k.Encrypt {
		w = append(w, "base key "+k.name()+" has CKA_ENCRYPT: C_Encrypt of the derivation data computes every DK on the host, in the clear")
	}
	if k.Extractable {
		w = append(w, "base key "+k.name()+" has CKA_EXTRACTABLE: it can be wrapped out of the token, and every DK with it")
	}
	return w
}
