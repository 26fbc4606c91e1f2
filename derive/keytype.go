package derive

import (
	"fmt"

	"github.com/miekg/pkcs11"
)

// KeyType is the type and length of a derived key.
type KeyType struct {
	ckk uint // CKK_*
	n   int  // bytes
}

// The key types a derived key can have. For any other length of generic
// secret use [KeyGeneric].
var (
	KeyAES128 = KeyType{pkcs11.CKK_AES, 16}
	KeyAES192 = KeyType{pkcs11.CKK_AES, 24}
	KeyAES256 = KeyType{pkcs11.CKK_AES, 32}
	KeyDES    = KeyType{pkcs11.CKK_DES, 8}   // single DES
	KeyDES2   = KeyType{pkcs11.CKK_DES2, 16} // two-key Triple DES
	KeyDES3   = KeyType{pkcs11.CKK_DES3, 24} // three-key Triple DES
)

// KeyGeneric is a CKK_GENERIC_SECRET key of n bytes, such as an HMAC key.
func KeyGeneric(n int) KeyType { return KeyType{pkcs11.CKK_GENERIC_SECRET, n} }

// Len is the key's length in bytes.
func (k KeyType) Len() int { return k.n }

// CKK is the PKCS#11 key type (CKK_AES, CKK_DES3, ...).
func (k KeyType) CKK() uint { return k.ckk }

func (k KeyType) String() string {
	switch k.ckk {
	case pkcs11.CKK_AES:
		return fmt.Sprintf("AES-%d", k.n*8)
	case pkcs11.CKK_DES:
		return "DES"
	case pkcs11.CKK_DES2:
		return "DES2"
	case pkcs11.CKK_DES3:
		return "DES3"
	case pkcs11.CKK_GENERIC_SECRET:
		return fmt.Sprintf("generic-%d", k.n)
	}
	return fmt.Sprintf("CKK(%#x)-%d", k.ckk, k.n)
}

// name is the key type's name for ParseKeyType.
func (k KeyType) name() string { return KeyTypeName(k.ckk) }

// KeyTypeName is the name ParseKeyType and the p11derive command use for a
// PKCS#11 key type: "aes", "des", "des2", "des3", "generic", or the number
// in hex for others.
func KeyTypeName(ckk uint) string {
	switch ckk {
	case pkcs11.CKK_AES:
		return "aes"
	case pkcs11.CKK_DES:
		return "des"
	case pkcs11.CKK_DES2:
		return "des2"
	case pkcs11.CKK_DES3:
		return "des3"
	case pkcs11.CKK_GENERIC_SECRET:
		return "generic"
	}
	return fmt.Sprintf("%#x", ckk)
}

// ParseKeyType returns the key type for the p11derive command's --key-type
// and --len flags: "aes" (n = 16, 24 or 32), "des", "des2", "des3" (n is
// implied; 0 or the key's own length), or "generic" (n > 0 bytes).
func ParseKeyType(name string, n int) (KeyType, error) {
	fixed := func(k KeyType) (KeyType, error) {
		if n != 0 && n != k.n {
			return KeyType{}, inputErr("len", "a %s key is %d bytes, not %d", k, k.n, n)
		}
		return k, nil
	}
	switch name {
	case "aes":
		switch n {
		case 16:
			return KeyAES128, nil
		case 24:
			return KeyAES192, nil
		case 32:
			return KeyAES256, nil
		case 0:
			return KeyType{}, inputErr("len", "an AES key needs a length of 16, 24 or 32 bytes")
		}
		return KeyType{}, inputErr("len", "an AES key is 16, 24 or 32 bytes, not %d", n)
	case "des":
		return fixed(KeyDES)
	case "des2":
		return fixed(KeyDES2)
	case "des3":
		return fixed(KeyDES3)
	case "generic":
		if n <= 0 {
			return KeyType{}, inputErr("len", "a generic secret needs a length in bytes")
		}
		return KeyGeneric(n), nil
	}
	return KeyType{}, inputErr("key-type", "unknown key type %q (aes, des, des2, des3, generic)", name)
}

func (k KeyType) validate() error {
	switch k.ckk {
	case pkcs11.CKK_AES:
		if k.n == 16 || k.n == 24 || k.n == 32 {
			return nil
		}
	case pkcs11.CKK_DES:
		if k.n == 8 {
			return nil
		}
	case pkcs11.CKK_DES2:
		if k.n == 16 {
			return nil
		}
	case pkcs11.CKK_DES3:
		if k.n == 24 {
			return nil
		}
	case pkcs11.CKK_GENERIC_SECRET:
		if k.n > 0 {
			return nil
		}
	case 0:
		return inputErr("key-type", "no output key type given")
	}
	return inputErr("key-type", "invalid output key type %v", k)
}

// Usage says what a derived key may be used for. The zero value is
// [DefaultUsage].
type Usage uint16

// The uses of a derived key, one PKCS#11 attribute each.
const (
	UseEncrypt Usage = 1 << iota // CKA_ENCRYPT
	UseDecrypt                   // CKA_DECRYPT
	UseSign                      // CKA_SIGN
	UseVerify                    // CKA_VERIFY
	UseWrap                      // CKA_WRAP
	UseUnwrap                    // CKA_UNWRAP
	UseDerive                    // CKA_DERIVE

	// DefaultUsage lets a derived key encrypt, decrypt, sign and verify
	// (MAC) — and nothing that could move other keys.
	DefaultUsage = UseEncrypt | UseDecrypt | UseSign | UseVerify
)

// UsageOf is the usage whose attributes are attrs (CKA_ENCRYPT is
// UseEncrypt, ...; attributes of no usage are left out): what a base key
// needs for a strategy, from StrategyPlan.Attributes.
func UsageOf(attrs []uint) Usage {
	var u Usage
	for _, a := range attrs {
		for _, ua := range usageAttrs {
			if ua.cka == a {
				u |= ua.u
			}
		}
	}
	return u
}

var usageAttrs = []struct {
	u   Usage
	cka uint
}{
	{UseEncrypt, pkcs11.CKA_ENCRYPT},
	{UseDecrypt, pkcs11.CKA_DECRYPT},
	{UseSign, pkcs11.CKA_SIGN},
	{UseVerify, pkcs11.CKA_VERIFY},
	{UseWrap, pkcs11.CKA_WRAP},
	{UseUnwrap, pkcs11.CKA_UNWRAP},
	{UseDerive, pkcs11.CKA_DERIVE},
}
