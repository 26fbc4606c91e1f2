package derive

import (
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/mechanisms"
)

// Hash is the hash function of an [HKDF] derivation.
type Hash uint8

// The hash functions of HKDF.
const (
	SHA256 Hash = iota + 1 // CKM_SHA256, 32 bytes
	SHA384                 // CKM_SHA384, 48 bytes
	SHA512                 // CKM_SHA512, 64 bytes
)

func (h Hash) String() string {
	switch h {
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("hash(%d)", uint8(h))
}

// Size is the hash's output length in bytes (HashLen in RFC 5869), or 0
// for an unknown hash.
func (h Hash) Size() int {
	switch h {
	case SHA256:
		return 32
	case SHA384:
		return 48
	case SHA512:
		return 64
	}
	return 0
}

func (h Hash) mechanism() uint {
	switch h {
	case SHA256:
		return pkcs11.CKM_SHA256
	case SHA384:
		return pkcs11.CKM_SHA384
	case SHA512:
		return pkcs11.CKM_SHA512
	}
	return 0
}

// HKDFMode says which stages of HKDF run.
type HKDFMode uint8

// The HKDF modes. The zero value is the full HKDF of RFC 5869.
const (
	// HKDFExtractExpand: PRK = HMAC(salt, K), DK = HKDF-Expand(PRK, data).
	HKDFExtractExpand HKDFMode = iota
	// HKDFExpandOnly: K is the PRK, DK = HKDF-Expand(K, data). No salt.
	HKDFExpandOnly
	// HKDFExtractOnly: DK = PRK = HMAC(salt, K), a key of exactly HashLen
	// bytes. No data.
	HKDFExtractOnly
)

func (m HKDFMode) String() string {
	switch m {
	case HKDFExtractExpand:
		return "extract-expand"
	case HKDFExpandOnly:
		return "expand-only"
	case HKDFExtractOnly:
		return "extract-only"
	}
	return fmt.Sprintf("hkdf-mode(%d)", uint8(m))
}

// HKDF is the HMAC-based extract-and-expand KDF of RFC 5869 keyed with the
// base key K: PRK = HMAC-Hash(salt, K), then DK = T(1) || T(2) || ...
// (leading bytes), T(i) = HMAC-Hash(PRK, T(i-1) || info || i). The
// request's data is the info. An empty salt is HashLen zero bytes (RFC 5869
// §2.2; CKF_HKDF_SALT_NULL).
//
// The token computes it with CKM_HKDF_DERIVE (PKCS#11 v3.0,
// CK_HKDF_PARAMS) in one C_DeriveKey; DK's length comes from its template.
// The base key is a generic secret or a CKK_HKDF key.
type HKDF struct {
	Hash Hash
	Salt []byte
	Mode HKDFMode
}

// Name returns "hkdf".
func (HKDF) Name() string { return "hkdf" }

func (f HKDF) checkBase(base *Key) error {
	switch base.Type {
	case pkcs11.CKK_GENERIC_SECRET, mechanisms.CKK_HKDF:
		return nil
	}
	return &KeyError{Key: base.name(), Reason: ErrKeyType,
		Problem: fmt.Sprintf("hkdf needs a generic secret or CKK_HKDF key, the base key has type %s", ckm.KeyType(base.Type))}
}

func (f HKDF) validate(data []byte, out KeyType) error {
	n := f.Hash.Size()
	if n == 0 {
		return inputErr("hash", "unknown hash %v (sha256, sha384, sha512)", f.Hash)
	}
	switch f.Mode {
	case HKDFExtractExpand:
	case HKDFExpandOnly:
		if len(f.Salt) != 0 {
			return inputErr("salt", "expand-only HKDF takes no salt (the base key is the PRK)")
		}
	case HKDFExtractOnly:
		if len(data) != 0 {
			return inputErr("data", "extract-only HKDF takes no data (info is an input of the expand stage)")
		}
		if out.Len() != n {
			return inputErr("len", "extract-only HKDF makes the %d-byte PRK of %s, not a %d-byte key", n, f.Hash, out.Len())
		}
	default:
		return inputErr("mode", "unknown HKDF mode %v (extract-expand, expand-only, extract-only)", f.Mode)
	}
	if out.Len() > 255*n {
		return inputErr("len", "HKDF-Expand with %s makes at most %d bytes, not %d", f.Hash, 255*n, out.Len())
	}
	return nil
}

func (f HKDF) profile(p *Profile) {
	p.set("hash", f.Hash.String())
	p.set("mode", f.Mode.String())
	p.setHex("salt", f.Salt)
}

func init() { register(parseHKDF, "hkdf") }

func parseHKDF(name string, m map[string]string) (Function, error) {
	p := newParams(name, m)
	f := HKDF{Hash: SHA256}
	switch h := strings.ToLower(strings.TrimSpace(p.str("hash"))); h {
	case "", "sha256":
	case "sha384":
		f.Hash = SHA384
	case "sha512":
		f.Hash = SHA512
	default:
		return nil, inputErr("hash", "unknown hash %q (sha256, sha384, sha512)", h)
	}
	switch md := strings.ToLower(strings.TrimSpace(p.str("mode"))); md {
	case "", "extract-expand":
	case "expand-only":
		f.Mode = HKDFExpandOnly
	case "extract-only":
		f.Mode = HKDFExtractOnly
	default:
		return nil, inputErr("mode", "unknown HKDF mode %q (extract-expand, expand-only, extract-only)", md)
	}
	salt, err := p.hex("salt")
	if err != nil {
		return nil, err
	}
	if len(salt) > 0 {
		f.Salt = salt
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return f, nil
}

// What the native strategy asks of HKDF (native.go).

func (HKDF) nativeMechanisms() []uint { return []uint{mechanisms.CKM_HKDF_DERIVE} }

func (HKDF) nativeCalls([]byte) int { return 1 }

func (f HKDF) nativeParams(data []byte) mechanisms.Params {
	params := &mechanisms.HKDFParams{
		Extract:          f.Mode != HKDFExpandOnly,
		Expand:           f.Mode != HKDFExtractOnly,
		PRFHashMechanism: f.Hash.mechanism(),
		Info:             data,
	}
	if params.Extract {
		params.SaltType = mechanisms.CKF_HKDF_SALT_NULL
		if len(f.Salt) > 0 {
			params.SaltType = mechanisms.CKF_HKDF_SALT_DATA
			params.Salt = f.Salt
		}
	}
	return params
}
