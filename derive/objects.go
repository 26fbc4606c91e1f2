package derive

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/pkcs11"
)

// What callers other than a derivation need from the token, each as a
// method that validates its input before any call and leaves nothing
// behind on error. There is no raw session in the API: every call goes
// through the Token's pool and the module's one function list.

// A Selector picks secret keys by CKA_LABEL and/or CKA_ID. Set fields must
// all match; an empty Selector matches every secret key the session sees.
type Selector struct {
	Label string
	ID    []byte
}

func (sel Selector) String() string {
	var parts []string
	if sel.Label != "" {
		parts = append(parts, "labelled "+strconv.Quote(sel.Label))
	}
	if len(sel.ID) > 0 {
		parts = append(parts, "with CKA_ID "+hex.EncodeToString(sel.ID))
	}
	if len(parts) == 0 {
		return "secret key"
	}
	return "secret key " + strings.Join(parts, " and ")
}

func (sel Selector) template() []*pkcs11.Attribute {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY)}
	if sel.Label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, sel.Label))
	}
	if len(sel.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, sel.ID))
	}
	return tmpl
}

// Find returns the one secret key sel selects: ErrNotFound if there is
// none, ErrAmbiguous if there are several. sel must name a label or an ID.
func (t *Token) Find(ctx context.Context, sel Selector) (*Key, error) {
	if sel.Label == "" && len(sel.ID) == 0 {
		return nil, inputErr("key", "no key label or ID given")
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	hs, err := s.find("find "+sel.String(), sel.template(), 2)
	if err != nil {
		return nil, err
	}
	switch len(hs) {
	case 0:
		return nil, fmt.Errorf("p11derive: no %s: %w", sel, ErrNotFound)
	case 1:
		return readKey(s, hs[0], 0)
	}
	return nil, fmt.Errorf("p11derive: more than one %s: %w", sel, ErrAmbiguous)
}

// Keys returns every secret key sel selects, with their attributes (an
// empty Selector: every secret key the token's sessions see). Keys deleted
// while they are read are left out.
func (t *Token) Keys(ctx context.Context, sel Selector) ([]*Key, error) {
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	hs, err := s.find("list "+sel.String()+"s", sel.template(), 0)
	if err != nil {
		return nil, err
	}
	keys := make([]*Key, 0, len(hs))
	for i, h := range hs {
		if i%256 == 0 {
			if err := contextDone(ctx); err != nil {
				return nil, err
			}
		}
		k, err := readKey(s, h, 0)
		if err != nil {
			if errors.Is(err, pkcs11.Error(pkcs11.CKR_OBJECT_HANDLE_INVALID)) {
				continue
			}
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Labels returns the CKA_LABEL of every secret key the token's sessions
// see, reading nothing else: the cheapest listing, for a batch that must
// know which of its keys exist.
func (t *Token) Labels(ctx context.Context) ([]string, error) {
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	hs, err := s.find("list secret keys", Selector{}.template(), 0)
	if err != nil {
		return nil, err
	}
	labels := make([]string, 0, len(hs))
	for i, h := range hs {
		if i%1024 == 0 {
			if err := contextDone(ctx); err != nil {
				return nil, err
			}
		}
		v, err := s.attributes("read a key's label", h, pkcs11.CKA_LABEL)
		if err != nil {
			continue // deleted meanwhile, or its label is not readable
		}
		labels = append(labels, string(v[pkcs11.CKA_LABEL]))
	}
	return labels, nil
}

// Attributes reads attributes of k other than its value: each present
// attribute's bytes as the token gives them (CK_BBOOL one byte, CK_ULONG
// native-endian), absent or unreadable ones left out of the map. CKA_VALUE
// is refused before any call.
func (t *Token) Attributes(ctx context.Context, k *Key, types ...uint) (map[uint][]byte, error) {
	if k == nil {
		return nil, inputErr("key", "no key given")
	}
	for _, typ := range types {
		if typ == pkcs11.CKA_VALUE {
			return nil, inputErr("attributes", "CKA_VALUE is never read")
		}
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	return s.attributes("read attributes of key "+k.name(), k.Handle, types...)
}

// An Attribute of an array attribute's value.
type Attribute struct {
	Type  uint
	Value []byte
}

// Template reads an array attribute of k (CKA_UNWRAP_TEMPLATE,
// CKA_DERIVE_TEMPLATE or CKA_WRAP_TEMPLATE): its entries, and whether k has
// it. A token that gives the array in a form that cannot be read safely
// (NSS softoken hands back the pointers it was given when the key was made)
// is an error that says so.
func (t *Token) Template(ctx context.Context, k *Key, typ uint) (entries []Attribute, present bool, err error) {
	if k == nil {
		return nil, false, inputErr("key", "no key given")
	}
	if typ&pkcs11.CKF_ARRAY_ATTRIBUTE == 0 {
		return nil, false, inputErr("attribute", "%#x is not an array attribute", typ)
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, false, err
	}
	defer t.release(s)
	s.calls += 3
	got, state, rv := s.ck.GetAttributeArray(uint(s.h), uint(k.Handle), typ)
	if rv != pkcs11.CKR_OK {
		return nil, false, s.fail("read array attribute of key "+k.name(), "C_GetAttributeValue", pkcs11.Error(rv))
	}
	switch state {
	case 0:
		return nil, false, nil
	case -1:
		return nil, true, fmt.Errorf("p11derive: the token does not fill in the entries of the array (it may hand back the array it was given, pointers included), so it cannot be read safely")
	}
	for _, e := range got {
		entries = append(entries, Attribute{Type: e.Type, Value: e.Value})
	}
	return entries, true, nil
}

// Wrap wraps k under the wrapping key with the mechanism (C_WrapKey, with
// param as the mechanism's parameter: an IV, say, or nil), in one call
// when the token gives the wrapped key in the room expected for it. k must
// be extractable and the wrapping key have CKA_WRAP; k's value never
// reaches the host in the clear.
func (t *Token) Wrap(ctx context.Context, wrapping, k *Key, mechanism uint, param []byte) ([]byte, error) {
	if wrapping == nil || k == nil {
		return nil, inputErr("key", "no key given")
	}
	if err := checkWrap(wrapping, k); err != nil {
		return nil, err
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	wrapped, err := s.wrapKey("wrap key", mechanism, param, wrapping.Handle, k.Handle, wrapRoom(k))
	if te, ok := err.(*TokenError); ok {
		// The keys named on failure only: formatting them on every wrap
		// cost more than a tenth of a batch row's own time.
		te.Step = "wrap key " + k.name() + " under " + wrapping.name()
	}
	return wrapped, err
}

// SessionCopy makes a session copy of k in the token (C_CopyObject with
// CKA_TOKEN false): the same value and attributes, never on the host, gone
// when the Token is closed (Destroy ends it sooner). Tokens whose key
// objects are slow to use (NSS's key database reads sqlite on every use)
// are much faster with session copies. A copy that came out less protected
// than k is destroyed and refused.
func (t *Token) SessionCopy(ctx context.Context, k *Key) (*Key, error) {
	if k == nil {
		return nil, inputErr("key", "no key given")
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	h, err := s.copyObject("copy key "+k.name()+" into a session object", k.Handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)})
	if err != nil {
		return nil, err
	}
	c, err := readKey(s, h, 0)
	if err == nil && ((k.Sensitive && !c.Sensitive) || (!k.Extractable && c.Extractable) || c.Token) {
		err = fmt.Errorf("p11derive: the session copy of %s is not protected as the key is", k.name())
	}
	if err != nil {
		s.cleanup("destroy the copy after a failure", h)
		return nil, err
	}
	return c, nil
}

// A KeySpec says what a key that Import or Unwrap makes is to be. The key
// is always sensitive; it is extractable (it can be wrapped under another
// key) only when Extractable is set.
type KeySpec struct {
	Label       string  // CKA_LABEL (optional)
	ID          []byte  // CKA_ID (optional)
	Type        KeyType // key type and length
	Usage       Usage   // what the key may be used for (not zero)
	Persistent  bool    // a token object (CKA_TOKEN=true); else a session object
	Extractable bool
	// StrictAttributes refuses (and destroys) a key the token made
	// weaker than asked in CKA_SENSITIVE or CKA_EXTRACTABLE, rather than
	// tightening it (see Request.StrictAttributes).
	StrictAttributes bool
}

// request is the Request whose template and checks serve spec.
func (t *Token) specRequest(spec KeySpec) (*Request, error) {
	if err := spec.Type.validate(); err != nil {
		return nil, err
	}
	if spec.Usage == 0 {
		return nil, inputErr("usage", "a key with no usage is of no use")
	}
	if spec.Persistent && t.readOnly {
		return nil, inputErr("persistent", "the token was opened read-only (Config.ReadOnly): it can make session keys only")
	}
	return &Request{KeyType: spec.Type, Label: spec.Label, ID: spec.ID, Persistent: spec.Persistent, Extractable: spec.Extractable,
		Usage: spec.Usage, StrictAttributes: spec.StrictAttributes}, nil
}

// Import creates a secret key of a known value in the token
// (C_CreateObject), as spec says. It is for keys whose value is public by
// design — known-answer test keys, the probe's — or already known to the
// caller; a key meant to stay secret should be generated in the token
// (Generate) or unwrapped into it (Unwrap). The value must be the
// type's length. The template's copy of the value is cleared after the
// call; value itself is the caller's.
func (t *Token) Import(ctx context.Context, spec KeySpec, value []byte) (*Key, error) {
	r, err := t.specRequest(spec)
	if err != nil {
		return nil, err
	}
	if len(value) != spec.Type.n {
		return nil, inputErr("value", "a %v key is %d bytes, not %d", spec.Type, spec.Type.n, len(value))
	}
	// CKA_VALUE_LEN may not be given with CKA_VALUE to C_CreateObject.
	tmpl := without(t.template(r), pkcs11.CKA_VALUE_LEN)
	v := &pkcs11.Attribute{Type: pkcs11.CKA_VALUE, Value: bytes.Clone(value)}
	defer clear(v.Value)
	tmpl = append(tmpl, v)
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	h, err := s.createObject("create key", tmpl)
	if err != nil {
		return nil, err
	}
	return s.keep(h, r, "key")
}

// Unwrap brings a wrapped key into the token (C_UnwrapKey) under the
// unwrapping key, with the mechanism and its parameter (an IV, or nil), as
// spec says: the way keys wrapped elsewhere (a transport key's, a batch's
// wrap-out) are loaded without their value reaching the host.
func (t *Token) Unwrap(ctx context.Context, unwrapping *Key, mechanism uint, param, wrapped []byte, spec KeySpec) (*Key, error) {
	if unwrapping == nil {
		return nil, inputErr("key", "no unwrapping key given")
	}
	if len(wrapped) == 0 {
		return nil, inputErr("wrapped", "no wrapped key given")
	}
	r, err := t.specRequest(spec)
	if err != nil {
		return nil, err
	}
	// The length comes with the wrapped value (and must not be given for
	// mechanisms that carry it).
	tmpl := without(t.template(r), pkcs11.CKA_VALUE_LEN)
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	h, err := s.unwrapKey("unwrap key under "+unwrapping.name(), []*pkcs11.Mechanism{pkcs11.NewMechanism(mechanism, param)}, unwrapping.Handle, wrapped, tmpl)
	if err != nil {
		return nil, err
	}
	return s.keep(h, r, "key")
}

// without is a copy of tmpl without the attributes of the given types
// (the cached template itself is shared and never changed).
func without(tmpl []*pkcs11.Attribute, types ...uint) []*pkcs11.Attribute {
	out := make([]*pkcs11.Attribute, 0, len(tmpl))
	for _, a := range tmpl {
		if !slices.Contains(types, a.Type) {
			out = append(out, a)
		}
	}
	return out
}

// ModuleInfo is the module's CK_INFO (C_GetInfo), its strings trimmed.
func (t *Token) ModuleInfo() (pkcs11.Info, error) {
	i, rv := t.mod.ck.GetInfo()
	if rv != pkcs11.CKR_OK {
		return i, &TokenError{Step: "read module information", Call: "C_GetInfo", Err: pkcs11.Error(rv)}
	}
	return i, nil
}

// MechanismInfo is the token's CK_MECHANISM_INFO for a mechanism
// (C_GetMechanismInfo): key sizes and the CKF_ flags saying what the
// mechanism may do (CKF_DERIVE, CKF_UNWRAP…).
func (t *Token) MechanismInfo(mechanism uint) (pkcs11.MechanismInfo, error) {
	i, rv := t.mod.ck.GetMechanismInfo(t.slot, mechanism)
	if rv != pkcs11.CKR_OK {
		return i, &TokenError{Step: "read mechanism information", Call: "C_GetMechanismInfo", Err: pkcs11.Error(rv)}
	}
	return i, nil
}

// SessionState is the state (CKS_*) of the Token's sessions, as
// C_GetSessionInfo gives it for one of them: whether they are read-only and
// whether the user is logged in.
func (t *Token) SessionState(ctx context.Context) (uint, error) {
	s, err := t.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer t.release(s)
	s.calls++
	i, rv := s.ck.GetSessionInfo(uint(s.h))
	if rv != pkcs11.CKR_OK {
		return 0, s.fail("read session state", "C_GetSessionInfo", pkcs11.Error(rv))
	}
	return i.State, nil
}

// SetLabel gives k the label (C_SetAttributeValue of CKA_LABEL, one call):
// the second phase of making a key under a provisional label, so that a key
// is found under its final label only once it is complete. It refuses an
// empty label before any call; k.Label is updated on success.
func (t *Token) SetLabel(ctx context.Context, k *Key, label string) error {
	if k == nil {
		return inputErr("key", "no key given")
	}
	if label == "" {
		return inputErr("label", "an empty label names no key")
	}
	if t.readOnly && k.Token {
		return inputErr("label", "the token was opened read-only (Config.ReadOnly)")
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return err
	}
	defer t.release(s)
	if err := s.setAttributes("label key "+k.name(), k.Handle, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}); err != nil {
		return err
	}
	k.Label = label
	return nil
}

// Handles returns the handles of the secret keys sel selects, at most max
// (0: all), reading no attribute (C_FindObjectsInit, C_FindObjects,
// C_FindObjectsFinal): the cheapest way to know whether a label is taken,
// and by how many keys. sel must name a label or an ID.
func (t *Token) Handles(ctx context.Context, sel Selector, max int) ([]pkcs11.ObjectHandle, error) {
	if sel.Label == "" && len(sel.ID) == 0 {
		return nil, inputErr("key", "no key label or ID given")
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	return s.find("find "+sel.String(), sel.template(), max)
}
