package derive

import (
	"encoding/binary"
	"errors"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ck"
)

// session is one PKCS#11 session, lent to one operation at a time. It
// counts the PKCS#11 calls made through it as they reach the module and
// names each failure.
//
// Every call goes through internal/ck, over the module's one function list:
// one cgo crossing and one PKCS#11 call each, output buffers sized here.
// There is no other way to the token.
type session struct {
	token    *Token
	ck       *ck.Module
	h        pkcs11.SessionHandle
	calls    int
	strategy Strategy

	seen uint64   // the pool's losses when the session was last known alive
	lost lossKind // what the failed calls said was lost, if anything

	// madeCall and madeMech are the last call that made a key and its
	// mechanism (0 for C_CreateObject), for errors about that key.
	madeCall string
	madeMech uint

	// ahead is DK's read-back made in the same cgo crossing as the call
	// that makes DK (deriveKeyData, unwrapKeyDK), when runStrategy asked for
	// it.
	ahead readAhead
}

// readAhead is a read of DK's attributes that the call making DK does in
// the same crossing: n attributes of ownKeyAttrsWithLen (0: none asked);
// done when it was made, of key h, with the read's return value rv.
type readAhead struct {
	n    int
	done bool
	h    pkcs11.ObjectHandle // the key read
	rv   uint
	v    fixedValues
}

// fixed is the ck read of the attributes asked for, into s.ahead.v.
func (s *session) fixed() ck.Fixed {
	return ck.Fixed{Types: ownKeyAttrsWithLen[:s.ahead.n], Sizes: ownKeyAttrSizes[:s.ahead.n], Vals: s.ahead.v.vals[:], Lens: s.ahead.v.lens[:]}
}

// made records the call that made the key the session works on.
func (s *session) made(call string, mech uint) { s.madeCall, s.madeMech = call, mech }

// lossKind is what a failed call says is gone besides the call itself.
type lossKind uint8

const (
	lossLogin   lossKind = iota + 1 // CKR_USER_NOT_LOGGED_IN: the login
	lossSession                     // the session (and maybe every other)
)

// lostSession reports whether err says the session is gone: closed, or its
// token removed (which closes every session of the token).
func lostSession(err error) bool {
	var ck pkcs11.Error
	if !errors.As(err, &ck) {
		return false
	}
	switch ck {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED:
		return true
	}
	return false
}

// note records what a failed call says was lost, for the Token to restore
// (see Token.release).
func (s *session) note(err error) {
	switch {
	case lostSession(err):
		s.lost = lossSession
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) && s.lost == 0:
		s.lost = lossLogin
	}
}

// ckErr is the error of a PKCS#11 return value, or nil.
func ckErr(rv uint) error {
	if rv == pkcs11.CKR_OK {
		return nil
	}
	return pkcs11.Error(rv)
}

// one returns the single mechanism of m, as ck takes it.
func one(m []*pkcs11.Mechanism) (uint, []byte) { return m[0].Mechanism, m[0].Parameter }

func (s *session) fail(step, call string, err error) error {
	s.note(err)
	return &TokenError{Strategy: s.strategy, Step: step, Call: call, Err: err}
}

func (s *session) deriveKey(step string, m []*pkcs11.Mechanism, base pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	mech, param := one(m)
	s.made("C_DeriveKey", mech)
	h, rv := s.ck.DeriveKey(uint(s.h), mech, param, uint(base), tmpl)
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_DeriveKey", pkcs11.Error(rv))
	}
	return pkcs11.ObjectHandle(h), nil
}

// deriveKeyData is deriveKey for the *_ENCRYPT_DATA mechanisms, their
// parameter built around data by ck (ECB without iv, CBC with one): the
// same single C_DeriveKey, without the C copy of data.
//
// It makes DK: when runStrategy asked for DK's read-back (s.ahead.n), the
// C_GetAttributeValue that reads it is made in the same crossing (the
// same two PKCS#11 calls, counted when they are made).
func (s *session) deriveKeyData(step string, mech uint, iv, data []byte, base pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	s.made("C_DeriveKey", mech)
	var h, rv uint
	if s.ahead.n > 0 {
		x := s.fixed()
		var readRv uint
		h, rv, readRv = s.ck.DeriveKeyDataRead(uint(s.h), mech, iv, data, uint(base), tmpl, &x)
		if rv == pkcs11.CKR_OK {
			s.calls++
			s.ahead.done, s.ahead.h, s.ahead.rv = true, pkcs11.ObjectHandle(h), readRv
		}
	} else {
		h, rv = s.ck.DeriveKeyData(uint(s.h), mech, iv, data, uint(base), tmpl)
	}
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_DeriveKey", pkcs11.Error(rv))
	}
	return pkcs11.ObjectHandle(h), nil
}

// unwrapKeyDK is unwrapKeyWith for the call that makes DK: with DK's
// read-back in the same crossing when runStrategy asked for it (see
// deriveKeyData).
func (s *session) unwrapKeyDK(step string, mech uint, param []byte, key pkcs11.ObjectHandle, wrapped []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if s.ahead.n == 0 {
		return s.unwrapKeyWith(step, mech, param, key, wrapped, tmpl)
	}
	s.calls++
	s.made("C_UnwrapKey", mech)
	x := s.fixed()
	h, rv, readRv := s.ck.UnwrapKeyRead(uint(s.h), mech, param, uint(key), wrapped, tmpl, &x)
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_UnwrapKey", pkcs11.Error(rv))
	}
	s.calls++
	s.ahead.done, s.ahead.h, s.ahead.rv = true, pkcs11.ObjectHandle(h), readRv
	return pkcs11.ObjectHandle(h), nil
}

func (s *session) destroy(step string, h pkcs11.ObjectHandle) error {
	s.calls++
	if rv := s.ck.DestroyObject(uint(s.h), uint(h)); rv != pkcs11.CKR_OK {
		return s.fail(step, "C_DestroyObject", pkcs11.Error(rv))
	}
	return nil
}

// cleanup destroys an object p11derive made and must not leave behind (an
// intermediate, or DK after a failure). A failure is tried once more, unless
// the session is gone (its session objects went with it); the error is the
// first failure's, for the caller to report.
func (s *session) cleanup(step string, h pkcs11.ObjectHandle) error {
	err := s.destroy(step, h)
	if err != nil && s.lost != lossSession {
		s.destroy(step, h)
	}
	return err
}

// attributes reads attributes of any length (labels, IDs) of an object:
// two C_GetAttributeValue calls, one for the lengths, one for the values.
// Attributes the token does not give (absent or sensitive) are absent from
// the map. Some tokens answer CKR_ATTRIBUTE_TYPE_INVALID for the whole call
// when one type is unknown, filling in nothing; the types are then read one
// at a time.
func (s *session) attributes(step string, h pkcs11.ObjectHandle, types ...uint) (map[uint][]byte, error) {
	vals, calls, rv := s.ck.ReadAttributes(uint(s.h), uint(h), types)
	s.calls += calls
	out := make(map[uint][]byte, len(types))
	switch rv {
	case pkcs11.CKR_OK:
	case pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE:
		if len(types) > 1 {
			for _, t := range types {
				one, calls, rv := s.ck.ReadAttributes(uint(s.h), uint(h), []uint{t})
				s.calls += calls
				if rv != pkcs11.CKR_OK && rv != pkcs11.CKR_ATTRIBUTE_TYPE_INVALID && rv != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
					return nil, s.fail(step, "C_GetAttributeValue", pkcs11.Error(rv))
				}
				if one != nil && one[0] != nil {
					out[t] = one[0]
				}
			}
			return out, nil
		}
	default:
		return nil, s.fail(step, "C_GetAttributeValue", pkcs11.Error(rv))
	}
	for i, t := range types {
		if vals[i] != nil {
			out[t] = vals[i]
		}
	}
	return out, nil
}

// encrypt encrypts in (one block at most: 64 bytes of room covers any
// cipher's block and the upper bounds tokens answer, NSS saying 48 for one
// AES block) in two calls: C_EncryptInit, C_Encrypt.
func (s *session) encrypt(step string, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle, in []byte) ([]byte, error) {
	mech, param := one(m)
	return s.encryptInto(step, mech, param, key, in, make([]byte, len(in)+64))
}

// encryptInto is encrypt into out (len(in)+64 bytes of room): the result is
// a prefix of out.
func (s *session) encryptInto(step string, mech uint, param []byte, key pkcs11.ObjectHandle, in, out []byte) ([]byte, error) {
	return s.once(step, ck.OpEncrypt, mech, param, key, in, out)
}

// once is op's Init and one-shot call (C_EncryptInit and C_Encrypt, or
// C_SignInit and C_Sign) into out, in one cgo crossing (ck.Once), each
// call counted and a failure named by the call that answered it: the
// result is a prefix of out.
func (s *session) once(step string, op ck.Op, mech uint, param []byte, key pkcs11.ObjectHandle, in, out []byte) ([]byte, error) {
	n, made, rv := s.ck.Once(op, uint(s.h), mech, param, uint(key), in, out)
	s.calls += made
	if rv != pkcs11.CKR_OK {
		first, second := op.Calls()
		if made == 1 {
			return nil, s.fail(step, first, pkcs11.Error(rv))
		}
		return nil, s.fail(step, second, pkcs11.Error(rv))
	}
	return out[:n], nil
}

func isCKR(err error, codes ...uint) bool {
	ck, ok := err.(pkcs11.Error)
	if !ok {
		return false
	}
	for _, c := range codes {
		if uint(ck) == c {
			return true
		}
	}
	return false
}

// fixedAttributes reads attributes of fixed size (CK_BBOOL, CK_ULONG) in
// one C_GetAttributeValue; sizes[i] is the size of types[i] (see
// fixedSizes). Attributes the token does not give come back absent from the
// map.
func (s *session) fixedAttributes(step string, h pkcs11.ObjectHandle, types []uint, sizes []int) (map[uint][]byte, error) {
	s.calls++
	vals, rv := s.ck.GetAttributeValue(uint(s.h), uint(h), types, sizes)
	if rv != pkcs11.CKR_OK && rv != pkcs11.CKR_ATTRIBUTE_TYPE_INVALID && rv != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
		return nil, s.fail(step, "C_GetAttributeValue", pkcs11.Error(rv))
	}
	out := make(map[uint][]byte, len(types))
	for i, t := range types {
		if vals[i] != nil {
			out[t] = vals[i]
		}
	}
	return out, nil
}

// fixedValues holds attributes read by fixedInto: the bytes of types[i] in
// vals[i][:lens[i]], or lens[i] < 0 when the token gave none. It lives on
// the caller's stack.
type fixedValues struct {
	vals [ck.MaxFixed][8]byte
	lens [ck.MaxFixed]int
}

// tooLong is the length fixedValues gives a value longer than a CK_ULONG.
const tooLong = 9

var tooLongValue = make([]byte, tooLong)

// value is the value of the ith attribute read, or nil.
func (v *fixedValues) value(i int) []byte {
	switch {
	case i < 0 || i >= len(v.lens) || v.lens[i] < 0:
		return nil
	case v.lens[i] > len(v.vals[i]):
		return tooLongValue
	}
	return v.vals[i][:v.lens[i]]
}

// fixedInto is fixedAttributes into v, without a map or an allocation:
// one C_GetAttributeValue of at most ck.MaxFixed attributes.
func (s *session) fixedInto(step string, h pkcs11.ObjectHandle, types []uint, sizes []int, v *fixedValues) error {
	s.calls++
	x := ck.Fixed{Types: types, Sizes: sizes, Vals: v.vals[:], Lens: v.lens[:]}
	rv := s.ck.GetFixedAttributes(uint(s.h), uint(h), &x)
	return s.fixedResult(step, rv)
}

// fixedResult is the error of a read of fixed-size attributes that
// answered rv, or nil.
func (s *session) fixedResult(step string, rv uint) error {
	if rv != pkcs11.CKR_OK && rv != pkcs11.CKR_ATTRIBUTE_TYPE_INVALID && rv != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
		return s.fail(step, "C_GetAttributeValue", pkcs11.Error(rv))
	}
	return nil
}

// fixedSizes is the buffer size of each attribute for fixedAttributes: 8
// for a CK_ULONG (ck rounds every slot up to a CK_ULONG), 1 for a CK_BBOOL.
func fixedSizes(types []uint) []int {
	sizes := make([]int, len(types))
	for i, t := range types {
		sizes[i] = 8
		if isBoolAttribute(t) {
			sizes[i] = 1
		}
	}
	return sizes
}

func isBoolAttribute(t uint) bool {
	switch t {
	case pkcs11.CKA_CLASS, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN:
		return false
	}
	return true
}

// ulong decodes a CK_ULONG attribute value (native byte order, 4 or 8 bytes).
func ulong(b []byte) (uint, bool) {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b)), true
	case 4:
		return uint(binary.NativeEndian.Uint32(b)), true
	}
	return 0, false
}

// boolean decodes a CK_BBOOL attribute value.
func boolean(b []byte) (v, ok bool) {
	if len(b) != 1 {
		return false, false
	}
	return b[0] != 0, true
}

// sign MACs in with two calls, C_SignInit and C_Sign, with room for any
// MAC: NSS answers a too-small buffer after absorbing the input, and its
// retry would MAC the input twice.
func (s *session) sign(step string, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle, in []byte) ([]byte, error) {
	mech, param := one(m)
	return s.signInto(step, mech, param, key, in, make([]byte, 128))
}

// signInto is sign into out, which must have room for any MAC the
// mechanism gives (128 bytes does): the result is a prefix of out.
func (s *session) signInto(step string, mech uint, param []byte, key pkcs11.ObjectHandle, in, out []byte) ([]byte, error) {
	return s.once(step, ck.OpSign, mech, param, key, in, out)
}

func (s *session) unwrapKey(step string, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle, wrapped []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	mech, param := one(m)
	return s.unwrapKeyWith(step, mech, param, key, wrapped, tmpl)
}

// unwrapKeyWith is unwrapKey with the mechanism as ck takes it.
func (s *session) unwrapKeyWith(step string, mech uint, param []byte, key pkcs11.ObjectHandle, wrapped []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	s.made("C_UnwrapKey", mech)
	h, rv := s.ck.UnwrapKey(uint(s.h), mech, param, uint(key), wrapped, tmpl)
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_UnwrapKey", pkcs11.Error(rv))
	}
	return pkcs11.ObjectHandle(h), nil
}

// find returns the handles of the objects matching tmpl, at most max
// (C_FindObjectsInit, C_FindObjects until max or the end, C_FindObjectsFinal).
// max <= 0 means all of them.
func (s *session) find(step string, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	s.calls++
	if rv := s.ck.FindObjectsInit(uint(s.h), tmpl); rv != pkcs11.CKR_OK {
		return nil, s.fail(step, "C_FindObjectsInit", pkcs11.Error(rv))
	}
	var out []pkcs11.ObjectHandle
	for max <= 0 || len(out) < max {
		n := 1024
		if max > 0 {
			n = min(n, max-len(out))
		}
		s.calls++
		hs, rv := s.ck.FindObjects(uint(s.h), n)
		if rv != pkcs11.CKR_OK {
			s.calls++
			s.ck.FindObjectsFinal(uint(s.h))
			return nil, s.fail(step, "C_FindObjects", pkcs11.Error(rv))
		}
		for _, h := range hs {
			out = append(out, pkcs11.ObjectHandle(h))
		}
		if len(hs) < n {
			break
		}
	}
	s.calls++
	if rv := s.ck.FindObjectsFinal(uint(s.h)); rv != pkcs11.CKR_OK {
		return nil, s.fail(step, "C_FindObjectsFinal", pkcs11.Error(rv))
	}
	return out, nil
}

func (s *session) generateKey(step string, mech uint, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	s.made("C_GenerateKey", mech)
	h, rv := s.ck.GenerateKey(uint(s.h), mech, nil, tmpl)
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_GenerateKey", pkcs11.Error(rv))
	}
	return pkcs11.ObjectHandle(h), nil
}

func (s *session) createObject(step string, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	s.made("C_CreateObject", 0)
	h, rv := s.ck.CreateObject(uint(s.h), tmpl)
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_CreateObject", pkcs11.Error(rv))
	}
	return pkcs11.ObjectHandle(h), nil
}

func (s *session) copyObject(step string, h pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	s.made("C_CopyObject", 0)
	c, rv := s.ck.CopyObject(uint(s.h), uint(h), tmpl)
	if rv != pkcs11.CKR_OK {
		return 0, s.fail(step, "C_CopyObject", pkcs11.Error(rv))
	}
	return pkcs11.ObjectHandle(c), nil
}

func (s *session) setAttributes(step string, h pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) error {
	s.calls++
	if rv := s.ck.SetAttributeValue(uint(s.h), uint(h), tmpl); rv != pkcs11.CKR_OK {
		return s.fail(step, "C_SetAttributeValue", pkcs11.Error(rv))
	}
	return nil
}

// wrapKey wraps key under wrapping in one C_WrapKey, with room for size
// bytes (the caller knows the wrapped length); a token that needs more
// answers CKR_BUFFER_TOO_SMALL with the length, and the wrap is made again
// with that room.
func (s *session) wrapKey(step string, mech uint, param []byte, wrapping, key pkcs11.ObjectHandle, size int) ([]byte, error) {
	out := make([]byte, size)
	s.calls++
	n, rv := s.ck.WrapKey(uint(s.h), mech, param, uint(wrapping), uint(key), out)
	if rv == pkcs11.CKR_BUFFER_TOO_SMALL && n > len(out) && n <= 1<<16 {
		out = make([]byte, n)
		s.calls++
		n, rv = s.ck.WrapKey(uint(s.h), mech, param, uint(wrapping), uint(key), out)
	}
	if rv != pkcs11.CKR_OK {
		return nil, s.fail(step, "C_WrapKey", pkcs11.Error(rv))
	}
	return out[:n], nil
}
