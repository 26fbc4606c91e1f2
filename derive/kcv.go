package derive

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// KCVMethod is a check value convention.
type KCVMethod string

// The check value conventions.
const (
	// KCVECB: the first 3 bytes of E_K(0^n), one zero block encrypted with
	// the key in ECB mode — the convention of ANSI X9.24-1 for Triple DES
	// keys, of PKCS#11 3.0's CKA_CHECK_VALUE for AES and DES keys, and
	// p11derive's default for every block cipher key.
	KCVECB KCVMethod = "ecb"
	// KCVCMAC: the first 3 bytes of CMAC_K(0^n) — the convention of ANSI
	// X9.24-1:2017, TR-31 and AWS Payment Cryptography for AES keys
	// (CKM_AES_CMAC); for Triple DES keys it is CMAC with CKM_DES3_CMAC.
	KCVCMAC KCVMethod = "cmac"
	// KCVAttribute: the ecb convention, read from the token's
	// CKA_CHECK_VALUE (PKCS#11 3.0) where it gives one — one call instead
	// of two, and the token's word, unverified — else computed as ecb.
	// Opt-in: SoftHSM2 2.6.1 gives derived keys a CKA_CHECK_VALUE that is
	// not their check value (TestCheckValueAttribute shows it), so the
	// default, ecb, always computes.
	KCVAttribute KCVMethod = "attribute"
	// KCVNone: no check value (a key type with no convention implemented,
	// such as HMAC and generic secret keys, or one asked for explicitly).
	KCVNone KCVMethod = "none"
)

// ParseKCVMethod reads "ecb", "cmac" or "none".
func ParseKCVMethod(s string) (KCVMethod, error) {
	switch m := KCVMethod(s); m {
	case KCVECB, KCVCMAC, KCVAttribute, KCVNone:
		return m, nil
	}
	return "", inputErr("kcv", "unknown check value method %q (ecb, cmac, attribute, none)", s)
}

// Where a check value came from.
const (
	// KCVFromAttribute: the token's CKA_CHECK_VALUE (PKCS#11 3.0), read
	// rather than computed (KCVAttribute only).
	KCVFromAttribute = "CKA_CHECK_VALUE"
	// KCVComputed: computed with the key (C_Encrypt or C_Sign).
	KCVComputed = "computed"
	// KCVSessionCopy: computed with a session copy of the key made with
	// CKA_ENCRYPT (ecb) or CKA_SIGN (cmac) set, destroyed at once: the key
	// itself lacks that usage, and keeps lacking it.
	KCVSessionCopy = "computed on a session copy"
)

// KCV is a key's check value and how it was had.
type KCV struct {
	Value  []byte
	Method KCVMethod
	Source string // KCVFromAttribute, KCVComputed or KCVSessionCopy
	Calls  int    // the PKCS#11 calls it took
}

// ckaCheckValue is PKCS#11 3.0's CKA_CHECK_VALUE.
const ckaCheckValue = 0x90

// CheckValueBy gives k's check value by method m, inside the token:
//
//   - ecb: C_Encrypt of a zero block.
//   - attribute: the token's CKA_CHECK_VALUE when it has one (PKCS#11 3.0
//     defines it as the ecb convention for AES and DES keys): one call
//     instead of two, unverified; else as ecb. The KCV's Method is ecb, its
//     Source says which.
//   - cmac: C_Sign of a zero block with CKM_AES_CMAC or CKM_DES3_CMAC.
//
// A key without the usage the computation needs (CKA_ENCRYPT for ecb,
// CKA_SIGN for cmac) is not changed: the check value is computed with a
// session copy of it (C_CopyObject with CKA_TOKEN false and that usage
// set), destroyed as soon as the block is computed, on every path. The
// key's own attributes, and so what it may do, stay as they are; the copy
// is as sensitive and as (non-)extractable as the key. Only a token that
// allows the copy makes one: a key with CKA_COPYABLE false, or a token
// that refuses to change the usage in a copy, leaves the key with no check
// value (an error matching ErrMissingAttribute).
//
// Keys of other types (HMAC, generic secret) have no convention here: an
// error matching ErrKeyType.
func (t *Token) CheckValueBy(ctx context.Context, k *Key, m KCVMethod) (_ *KCV, err error) {
	if k == nil {
		return nil, inputErr("key", "no key given")
	}
	n := k.Cipher().BlockSize()
	attr := m == KCVAttribute
	if attr {
		m = KCVECB
	}
	mech, usage, err := kcvMechanism(k, m)
	if err != nil {
		return nil, err
	}
	s, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release(s)
	start := s.calls
	out := &KCV{Method: m, Source: KCVComputed}
	if attr && !t.noCheckValue.Load() {
		v, err := t.readCheckValue(s, k)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out.Value, out.Source, out.Calls = v, KCVFromAttribute, s.calls-start
			return out, nil
		}
	}
	h := k.Handle
	can := k.Encrypt
	if usage == pkcs11.CKA_SIGN {
		can = k.Sign
	}
	if !can {
		c, err := s.copyObject("copy key "+k.name()+" with "+attrName(usage)+" set, for its check value", k.Handle,
			[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false), pkcs11.NewAttribute(usage, true)})
		if err != nil {
			return nil, &KeyError{Key: k.name(), Reason: ErrMissingAttribute,
				Problem: fmt.Sprintf("a %s check value needs %s, which the key lacks, and the token refused a session copy with it set (%v)", m, attrName(usage), err)}
		}
		defer func() {
			// A copy left behind is key material nobody would destroy:
			// its failure fails the check value.
			if derr := s.cleanup("destroy the check value copy of key "+k.name(), c); derr != nil && err == nil {
				err = derr
			}
		}()
		h, out.Source = c, KCVSessionCopy
	}
	var v []byte
	if usage == pkcs11.CKA_SIGN {
		v, err = s.sign("check value of key "+k.name(), []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, h, make([]byte, n))
	} else {
		v, err = s.encrypt("check value of key "+k.name(), []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, h, make([]byte, n))
	}
	if err != nil {
		return nil, err
	}
	if len(v) < 3 {
		return nil, s.fail("check value of key "+k.name(), "C_Encrypt", fmt.Errorf("%d bytes of output", len(v)))
	}
	out.Value = v[:3:3]
	out.Calls = s.calls - start
	if out.Source == KCVSessionCopy {
		out.Calls++ // the copy's destruction, made when this returns
	}
	return out, nil
}

// kcvMechanism is the mechanism computing key k's check value by method m
// (KCVECB or KCVCMAC), and the attribute (CKA_ENCRYPT, CKA_SIGN) the key
// needs for it.
func kcvMechanism(k *Key, m KCVMethod) (mech, usage uint, err error) {
	switch m {
	case KCVECB:
		usage = pkcs11.CKA_ENCRYPT
		switch k.Type {
		case pkcs11.CKK_AES:
			mech = pkcs11.CKM_AES_ECB
		case pkcs11.CKK_DES2, pkcs11.CKK_DES3:
			mech = pkcs11.CKM_DES3_ECB
		case pkcs11.CKK_DES:
			mech = pkcs11.CKM_DES_ECB
		}
	case KCVCMAC:
		usage = pkcs11.CKA_SIGN
		switch k.Type {
		case pkcs11.CKK_AES:
			mech = pkcs11.CKM_AES_CMAC
		case pkcs11.CKK_DES2, pkcs11.CKK_DES3:
			mech = pkcs11.CKM_DES3_CMAC
		}
	default:
		return 0, 0, inputErr("kcv", "no check value by method %q (ecb, cmac, attribute)", m)
	}
	if mech == 0 {
		return 0, 0, &KeyError{Key: k.name(), Reason: ErrKeyType,
			Problem: fmt.Sprintf("no %s check value for key type %s (AES and DES keys only)", m, KeyTypeName(k.Type))}
	}
	return mech, usage, nil
}

// readCheckValue reads key k's CKA_CHECK_VALUE, or returns nil if the
// token has none to give (then the check value is computed).
func (t *Token) readCheckValue(s *session, k *Key) ([]byte, error) {
	// One call, with room for the 3 bytes PKCS#11 3.0 defines (a longer
	// value is not this convention's, and is not used).
	s.calls++
	v, rv := s.ck.GetAttributeValue(uint(s.h), uint(k.Handle), []uint{ckaCheckValue}, []int{8})
	switch {
	case rv == pkcs11.CKR_ATTRIBUTE_TYPE_INVALID:
		t.noCheckValue.Store(true)
	case rv == pkcs11.CKR_OK && len(v) == 1 && len(v[0]) == 3:
		return v[0], nil
	case rv != pkcs11.CKR_OK && rv != pkcs11.CKR_ATTRIBUTE_SENSITIVE && rv != pkcs11.CKR_BUFFER_TOO_SMALL:
		return nil, s.fail("read the check value of key "+k.name(), "C_GetAttributeValue", pkcs11.Error(rv))
	}
	return nil, nil
}

func attrName(cka uint) string {
	if cka == pkcs11.CKA_SIGN {
		return "CKA_SIGN"
	}
	return "CKA_ENCRYPT"
}
