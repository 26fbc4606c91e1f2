// Package ckm names PKCS#11 mechanisms — CKM_AES_ECB_ENCRYPT_DATA for
// 0x1104 and back — and the secret key types p11derive handles, for error
// messages, reports and configuration.
package ckm

//go:generate go run gen_names.go

import (
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// The PKCS#11 3.0 mechanisms github.com/miekg/pkcs11 v1.1.2 does not define.
var extra = map[string]uint{
	"CKM_SP800_108_COUNTER_KDF":         0x3ac,
	"CKM_SP800_108_FEEDBACK_KDF":        0x3ad,
	"CKM_SP800_108_DOUBLE_PIPELINE_KDF": 0x3ae,
	"CKM_HKDF_DERIVE":                   0x402a,
	"CKM_HKDF_DATA":                     0x402b,
	"CKM_HKDF_KEY_GEN":                  0x402c,
}

var (
	once   sync.Once
	byCode map[uint]string
)

func index() {
	byCode = make(map[uint]string, len(byName)+len(extra))
	for _, m := range []map[string]uint{byName, extra} {
		for n, c := range m {
			// Some codes have two names (an old and a new one): keep the
			// shorter, then the first in order, for a stable answer.
			if old, ok := byCode[c]; !ok || len(n) < len(old) || (len(n) == len(old) && n < old) {
				byCode[c] = n
			}
		}
	}
}

// Name returns the mechanism's CKM_ name, or its number in hex.
func Name(m uint) string {
	once.Do(index)
	if n, ok := byCode[m]; ok {
		return n
	}
	return fmt.Sprintf("CKM(%#x)", m)
}

// Lookup returns the mechanism named name: a CKM_ name or a number
// (0x1104 or 4356).
func Lookup(name string) (uint, bool) {
	if c, ok := byName[name]; ok {
		return c, true
	}
	if c, ok := extra[name]; ok {
		return c, true
	}
	if strings.HasPrefix(name, "CKM_") {
		return 0, false
	}
	c, err := strconv.ParseUint(name, 0, 0)
	return uint(c), err == nil
}

// The secret key types p11derive makes and takes (CKK_ values of the
// PKCS#11 standard).
var keyTypes = map[uint]string{
	pkcs11.CKK_GENERIC_SECRET: "CKK_GENERIC_SECRET",
	pkcs11.CKK_DES:            "CKK_DES",
	pkcs11.CKK_DES2:           "CKK_DES2",
	pkcs11.CKK_DES3:           "CKK_DES3",
	pkcs11.CKK_AES:            "CKK_AES",
}

// KeyType names a key type: "CKK_AES", "CKK_DES3"..., or "CKK(0x…)" for a
// type p11derive does not handle.
func KeyType(ckk uint) string {
	if n, ok := keyTypes[ckk]; ok {
		return n
	}
	return fmt.Sprintf("CKK(%#x)", ckk)
}
