package ckm

import (
	"testing"

	"github.com/miekg/pkcs11"
)

func TestNames(t *testing.T) {
	for name, code := range map[string]uint{
		"CKM_AES_ECB_ENCRYPT_DATA":  pkcs11.CKM_AES_ECB_ENCRYPT_DATA,
		"CKM_DES3_CBC_ENCRYPT_DATA": pkcs11.CKM_DES3_CBC_ENCRYPT_DATA,
		"CKM_AES_MAC_GENERAL":       pkcs11.CKM_AES_MAC_GENERAL,
		"CKM_SP800_108_COUNTER_KDF": 0x3ac,
		"CKM_HKDF_DERIVE":           0x402a,
	} {
		if got := Name(code); got != name {
			t.Errorf("Name(%#x) = %s, want %s", code, got, name)
		}
		if got, ok := Lookup(name); !ok || got != code {
			t.Errorf("Lookup(%s) = %#x, %v", name, got, ok)
		}
	}
	if got := Name(0x7fff0001); got != "CKM(0x7fff0001)" {
		t.Errorf("unknown mechanism named %s", got)
	}
	if _, ok := Lookup("CKM_NO_SUCH_THING"); ok {
		t.Error("Lookup found a mechanism that does not exist")
	}
	if c, ok := Lookup("0x1104"); !ok || c != 0x1104 {
		t.Error("Lookup of a hex number failed")
	}
}

func TestKeyType(t *testing.T) {
	for ckk, want := range map[uint]string{
		pkcs11.CKK_AES: "CKK_AES", pkcs11.CKK_DES: "CKK_DES", pkcs11.CKK_DES2: "CKK_DES2",
		pkcs11.CKK_DES3: "CKK_DES3", pkcs11.CKK_GENERIC_SECRET: "CKK_GENERIC_SECRET",
		pkcs11.CKK_RSA: "CKK(0x0)", pkcs11.CKK_RC4: "CKK(0x12)",
	} {
		if got := KeyType(ckk); got != want {
			t.Errorf("KeyType(%#x) = %q, want %q", ckk, got, want)
		}
	}
}
