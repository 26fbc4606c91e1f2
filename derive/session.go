package derive

import (
	"encoding/binary"

	"github.com/miekg/pkcs11"
)

// session is one PKCS#11 session, lent to one operation at a time. It counts
// the PKCS#11 calls made through it as they reach the module (miekg/pkcs11
// makes two calls for the functions that return variable-length output:
// one for the length, one for the value) and names each failure.
type session struct {
	token    *Token
	ctx      *pkcs11.Ctx
	h        pkcs11.SessionHandle
	calls    int
	strategy Strategy
}

func (s *session) fail(step, call string, err error) error {
	return &TokenError{Strategy: s.strategy, Step: step, Call: call, Err: err}
}

func (s *session) deriveKey(step string, m []*pkcs11.Mechanism, base pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	s.calls++
	h, err := s.ctx.DeriveKey(s.h, m, base, tmpl)
	if err != nil {
		return 0, s.fail(step, "C_DeriveKey", err)
	}
	return h, nil
}

func (s *session) destroy(step string, h pkcs11.ObjectHandle) error {
	s.calls++
	if err := s.ctx.DestroyObject(s.h, h); err != nil {
		return s.fail(step, "C_DestroyObject", err)
	}
	return nil
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
	h, err := s.ctx.UnwrapKey(s.h, m, key, wrapped, tmpl)
	if err != nil {
		return 0, s.fail(step, "C_UnwrapKey", err)
	}
	return h, nil
}
