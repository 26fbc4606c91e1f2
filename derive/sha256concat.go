package derive

import (
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
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
		Problem: fmt.Sprintf("sha256-concat needs a generic secret or AES key, the base key has type %s", ckm.KeyType(base.Type))}
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

// What the native strategy asks of SHA256Concat (native.go): K || data
// first, then its hash.

func (SHA256Concat) nativeMechanisms() []uint {
	return []uint{pkcs11.CKM_CONCATENATE_BASE_AND_DATA, pkcs11.CKM_SHA256_KEY_DERIVATION}
}

// nativeCalls: two C_DeriveKey and the C_DestroyObject of the intermediate.
func (SHA256Concat) nativeCalls([]byte) int { return 3 }

func (SHA256Concat) nativeParams(data []byte) mechanisms.Params {
	return &mechanisms.KeyDerivationStringData{Data: data}
}

// nativeIntermediate: K || data, a generic secret that may only derive.
func (SHA256Concat) nativeIntermediate(base *Key, data []byte) (step, name string, tmpl []*pkcs11.Attribute) {
	n := 0 // the token's length, when K's is not known
	if base.Len > 0 {
		// All of K || data: a token must not shorten the intermediate.
		n = base.Len + len(data)
	}
	return "concatenate K || data", "K || data", intermediateTemplate(n)
}
