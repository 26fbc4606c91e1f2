package derive

import (
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/mechanisms"
)

// SHA256Concat is the legacy hash KDF DK = the leading bytes of
// SHA-256(K || data), at most 32 bytes.
//
// The token computes it in two derivations: CKM_CONCATENATE_BASE_AND_DATA
// makes K || data as an intermediate generic secret (a sensitive,
// non-extractable session object), CKM_SHA256_KEY_DERIVATION hashes it into
// DK, and the intermediate is destroyed, on every path.
type SHA256Concat struct{}

// Name returns "sha256-concat".
func (SHA256Concat) Name() string { return "sha256-concat" }

func (f SHA256Concat) checkBase(base *Key) error {
	switch base.Type {
	case pkcs11.CKK_GENERIC_SECRET, pkcs11.CKK_AES:
		return nil
	}
	return &KeyError{Key: base.name(), Reason: ErrKeyType,
		Problem: fmt.Sprintf("sha256-concat needs a generic secret or AES key, the base key has type %s", ckkName(base.Type))}
}

func (SHA256Concat) validate(data []byte, out KeyType) error {
	if len(data) == 0 {
		return inputErr("data", "no derivation data")
	}
	if out.Len() > 32 {
		return inputErr("len", "SHA-256 makes 32 bytes, not enough for a %d-byte %s key", out.Len(), out)
	}
	return nil
}

func (SHA256Concat) profile(*Profile) {}

func init() { register(parseSHA256Concat, "sha256-concat") }

func parseSHA256Concat(name string, m map[string]string) (Function, error) {
	if err := newParams(name, m).done(); err != nil {
		return nil, err
	}
	return SHA256Concat{}, nil
}

// SHA256Concat's native derivation.

func (SHA256Concat) nativeMechanisms() []uint {
	return []uint{pkcs11.CKM_CONCATENATE_BASE_AND_DATA, pkcs11.CKM_SHA256_KEY_DERIVATION}
}

// nativeCalls: two C_DeriveKey and the C_DestroyObject of the intermediate.
func (SHA256Concat) nativeCalls([]byte) int { return 3 }

func (f SHA256Concat) deriveNative(s *session, base *Key, data []byte, tmpl []*pkcs11.Attribute) (dk pkcs11.ObjectHandle, err error) {
	kd := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
	}
	if base.Len > 0 {
		// All of K || data: a token must not shorten the intermediate.
		kd = append(kd, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, base.Len+len(data)))
	}
	var kdh pkcs11.ObjectHandle
	err = mechanisms.Call(pkcs11.CKM_CONCATENATE_BASE_AND_DATA, &mechanisms.KeyDerivationStringData{Data: data}, func(m []*pkcs11.Mechanism) error {
		var err error
		kdh, err = s.deriveKey("concatenate K || data", m, base.Handle, kd)
		return err
	})
	if err != nil {
		return 0, err
	}
	// The intermediate holds K || data: destroy it on every path, panics
	// included. A failed destruction fails the derivation (and DK is
	// destroyed): an intermediate left behind is a copy of K.
	defer func() {
		derr := s.cleanup("destroy K || data", kdh)
		if derr != nil && err == nil {
			if dk != 0 {
				s.cleanup("destroy DK after failure", dk)
			}
			dk, err = 0, derr
		}
	}()
	return s.deriveKey("derive DK", []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256_KEY_DERIVATION, nil)}, kdh, tmpl)
}
