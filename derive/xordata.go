package derive

import (
	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/mechanisms"
)

// XORData is DK = K XOR data, the leading bytes the output key needs: the
// XOR of the base key with public data, such as the key variants of
// TR-31 versions A and C. The data must be at least as long as DK, and the
// base key too.
//
// The token computes it with one C_DeriveKey and
// CKM_XOR_BASE_AND_DATA (NSS softoken runs it; SoftHSM2 2.6.1 does not).
// It is no XOR of two secret values, which no standard mechanism computes.
type XORData struct{}

// Name returns "xor-data".
func (XORData) Name() string { return "xor-data" }

// checkBase takes any secret key: the token refuses one shorter than DK.
func (XORData) checkBase(*Key) error { return nil }

func (XORData) validate(data []byte, out KeyType) error {
	if len(data) == 0 {
		return inputErr("data", "no derivation data")
	}
	if len(data) < out.Len() {
		return inputErr("data", "%d bytes of data cannot fill a %d-byte %s key", len(data), out.Len(), out)
	}
	return nil
}

func (XORData) profile(*Profile) {}

func init() { register(parseXORData, "xor-data") }

func parseXORData(name string, m map[string]string) (Function, error) {
	if err := newParams(name, m).done(); err != nil {
		return nil, err
	}
	return XORData{}, nil
}

// What the native strategy asks of XORData (native.go).

func (XORData) nativeMechanisms() []uint { return []uint{pkcs11.CKM_XOR_BASE_AND_DATA} }

func (XORData) nativeCalls([]byte) int { return 1 }

func (XORData) nativeParams(data []byte) mechanisms.Params {
	return &mechanisms.KeyDerivationStringData{Data: data}
}
