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
// The hot calls go through internal/ck (one cgo crossing, one PKCS#11 call
// each, output buffers sized here) when the module's function list could be
// had; otherwise through miekg/pkcs11, which makes two PKCS#11 calls for
// the functions with variable-length output (one for the length, one for
// the value), and the count says so.
type session struct {
	token    *Token
	ctx      *pkcs11.Ctx
	fast     *ck.Module
	h        pkcs11.SessionHandle
	calls    int
	strategy Strategy

	seen uint64   // the Token's losses when the session was last known alive
	lost lossKind // what the failed calls said was lost, if anything
}

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
	var h pkcs11.ObjectHandle
	var err error
	if s.fast != nil {
		mech, param := one(m)
		hh, rv := s.fast.DeriveKey(uint(s.h), mech, param, uint(base), tmpl)
		h, err = pkcs11.ObjectHandle(hh), ckErr(rv)
	} else {
		h, err = s.ctx.DeriveKey(s.h, m, base, tmpl)
	}
	if err != nil {
		return 0, s.fail(step, "C_DeriveKey", err)
	}
	return h, nil
}

func (s *session) destroy(step string, h pkcs11.ObjectHandle) error {
	s.calls++
	var err error
	if s.fast != nil {
		err = ckErr(s.fast.DestroyObject(uint(s.h), uint(h)))
	} else {
		err = s.ctx.DestroyObject(s.h, h)
	}
	if err != nil {
		return s.fail(step, "C_DestroyObject", err)
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

// attributes reads attributes of an object. Attributes the token does not
// give (absent or sensitive) come back with a nil Value.
func (s *session) attributes(step string, h pkcs11.ObjectHandle, types ...uint) (map[uint][]byte, error) {
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	s.calls += 2
	got, err := s.ctx.GetAttributeValue(s.h, h, tmpl)
	if err != nil {
		s.calls-- // the length query failed: no second call was made
		// Some tokens answer CKR_ATTRIBUTE_TYPE_INVALID for the whole call
		// when one type is unknown; read one at a time then.
		if !isCKR(err, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
			return nil, s.fail(step, "C_GetAttributeValue", err)
		}
		out := make(map[uint][]byte, len(types))
		for _, t := range types {
			s.calls += 2
			a, err := s.ctx.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(t, nil)})
			if err != nil {
				s.calls--
			}
			if err == nil && len(a) == 1 {
				out[t] = a[0].Value
			} else if err != nil && !isCKR(err, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
				return nil, s.fail(step, "C_GetAttributeValue", err)
			}
		}
		return out, nil
	}
	out := make(map[uint][]byte, len(got))
	for _, a := range got {
		out[a.Type] = a.Value
	}
	return out, nil
}

func (s *session) encrypt(step string, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle, in []byte) ([]byte, error) {
	if s.fast != nil {
		// One block at most: 64 bytes of room covers any cipher's block
		// and the upper bounds tokens answer (NSS says 48 for one AES block).
		s.calls++
		mech, param := one(m)
		if err := ckErr(s.fast.EncryptInit(uint(s.h), mech, param, uint(key))); err != nil {
			return nil, s.fail(step, "C_EncryptInit", err)
		}
		s.calls++
		out := make([]byte, len(in)+64)
		n, rv := s.fast.Encrypt(uint(s.h), in, out)
		if err := ckErr(rv); err != nil {
			return nil, s.fail(step, "C_Encrypt", err)
		}
		return out[:n], nil
	}
	s.calls++
	if err := s.ctx.EncryptInit(s.h, m, key); err != nil {
		return nil, s.fail(step, "C_EncryptInit", err)
	}
	s.calls += 2
	out, err := s.ctx.Encrypt(s.h, in)
	if err != nil {
		s.calls--
		return nil, s.fail(step, "C_Encrypt", err)
	}
	return out, nil
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
// map. Without the fast path it is attributes.
func (s *session) fixedAttributes(step string, h pkcs11.ObjectHandle, types []uint, sizes []int) (map[uint][]byte, error) {
	if s.fast == nil {
		return s.attributes(step, h, types...)
	}
	maxLen := sizes
	s.calls++
	vals, rv := s.fast.GetAttributeValue(uint(s.h), uint(h), types, maxLen)
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

func (s *session) sign(step string, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle, in []byte) ([]byte, error) {
	if s.fast != nil {
		// Room for any MAC: NSS answers a too-small buffer after absorbing
		// the input, and its retry would MAC the input twice.
		s.calls++
		mech, param := one(m)
		if err := ckErr(s.fast.SignInit(uint(s.h), mech, param, uint(key))); err != nil {
			return nil, s.fail(step, "C_SignInit", err)
		}
		s.calls++
		out := make([]byte, 128)
		n, rv := s.fast.Sign(uint(s.h), in, out)
		if err := ckErr(rv); err != nil {
			return nil, s.fail(step, "C_Sign", err)
		}
		return out[:n], nil
	}
	s.calls++
	if err := s.ctx.SignInit(s.h, m, key); err != nil {
		return nil, s.fail(step, "C_SignInit", err)
	}
	s.calls += 2
	out, err := s.ctx.Sign(s.h, in)
	if err != nil {
		return nil, s.fail(step, "C_Sign", err)
	}
	return out, nil
}

func (s *session) unwrapKey(step string, m []*pkcs11.Mechanism, key pkcs11.ObjectHandle, wrapped []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	var h pkcs11.ObjectHandle
	var err error
	if s.fast != nil {
		mech, param := one(m)
		hh, rv := s.fast.UnwrapKey(uint(s.h), mech, param, uint(key), wrapped, tmpl)
		h, err = pkcs11.ObjectHandle(hh), ckErr(rv)
	} else {
		h, err = s.ctx.UnwrapKey(s.h, m, key, wrapped, tmpl)
	}
	if err != nil {
		return 0, s.fail(step, "C_UnwrapKey", err)
	}
	return h, nil
}
