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
