package probe

import (
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/ckm"
)

// CKM_ values miekg/pkcs11 v1.1.2 does not define.
const (
	ckmSP800108Counter        = 0x3ac
	ckmSP800108Feedback       = 0x3ad
	ckmSP800108DoublePipeline = 0x3ae
	ckmHKDFDerive             = 0x402a
	ckmHKDFData               = 0x402b
	ckmAESKeyWrapKWP          = 0x210b
)

// mechGroups are the mechanisms that matter to derivation, by group, in
// report order.
var mechGroups = []struct {
	group string
	mechs []uint
}{
	{"encrypt-data", []uint{
		pkcs11.CKM_AES_ECB_ENCRYPT_DATA, pkcs11.CKM_AES_CBC_ENCRYPT_DATA,
		pkcs11.CKM_DES3_ECB_ENCRYPT_DATA, pkcs11.CKM_DES3_CBC_ENCRYPT_DATA,
		pkcs11.CKM_DES_ECB_ENCRYPT_DATA, pkcs11.CKM_DES_CBC_ENCRYPT_DATA,
		pkcs11.CKM_ARIA_ECB_ENCRYPT_DATA, pkcs11.CKM_ARIA_CBC_ENCRYPT_DATA,
		pkcs11.CKM_CAMELLIA_ECB_ENCRYPT_DATA, pkcs11.CKM_CAMELLIA_CBC_ENCRYPT_DATA,
		pkcs11.CKM_SEED_ECB_ENCRYPT_DATA, pkcs11.CKM_SEED_CBC_ENCRYPT_DATA,
	}},
	{"mac", []uint{
		pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_AES_MAC, pkcs11.CKM_AES_CMAC, pkcs11.CKM_AES_CMAC_GENERAL,
		pkcs11.CKM_DES3_MAC_GENERAL, pkcs11.CKM_DES3_MAC, pkcs11.CKM_DES3_CMAC, pkcs11.CKM_DES3_CMAC_GENERAL,
		pkcs11.CKM_DES_MAC_GENERAL, pkcs11.CKM_DES_MAC,
		pkcs11.CKM_SHA256_HMAC, pkcs11.CKM_SHA384_HMAC, pkcs11.CKM_SHA512_HMAC,
	}},
	{"cipher", []uint{
		pkcs11.CKM_AES_ECB, pkcs11.CKM_AES_CBC, pkcs11.CKM_AES_CTR, pkcs11.CKM_AES_OFB, pkcs11.CKM_AES_CFB128,
		pkcs11.CKM_DES3_ECB, pkcs11.CKM_DES3_CBC, pkcs11.CKM_DES_ECB, pkcs11.CKM_DES_CBC,
	}},
	{"kdf", []uint{
		ckmSP800108Counter, ckmSP800108Feedback, ckmSP800108DoublePipeline, ckmHKDFDerive, ckmHKDFData,
		pkcs11.CKM_CONCATENATE_BASE_AND_KEY, pkcs11.CKM_CONCATENATE_BASE_AND_DATA,
		pkcs11.CKM_CONCATENATE_DATA_AND_BASE, pkcs11.CKM_XOR_BASE_AND_DATA,
		pkcs11.CKM_SHA1_KEY_DERIVATION, pkcs11.CKM_SHA256_KEY_DERIVATION,
		pkcs11.CKM_SHA384_KEY_DERIVATION, pkcs11.CKM_SHA512_KEY_DERIVATION,
	}},
	{"wrap", []uint{pkcs11.CKM_AES_KEY_WRAP, pkcs11.CKM_AES_KEY_WRAP_PAD, ckmAESKeyWrapKWP}},
	{"keygen", []uint{pkcs11.CKM_AES_KEY_GEN, pkcs11.CKM_DES3_KEY_GEN, pkcs11.CKM_DES_KEY_GEN, pkcs11.CKM_GENERIC_SECRET_KEY_GEN}},
}

var flagNames = []struct {
	f    uint
	name string
}{
	{pkcs11.CKF_HW, "hw"},
	{pkcs11.CKF_ENCRYPT, "encrypt"}, {pkcs11.CKF_DECRYPT, "decrypt"}, {pkcs11.CKF_DIGEST, "digest"},
	{pkcs11.CKF_SIGN, "sign"}, {pkcs11.CKF_SIGN_RECOVER, "sign-recover"}, {pkcs11.CKF_VERIFY, "verify"},
	{pkcs11.CKF_VERIFY_RECOVER, "verify-recover"}, {pkcs11.CKF_GENERATE, "generate"},
	{pkcs11.CKF_GENERATE_KEY_PAIR, "generate-key-pair"}, {pkcs11.CKF_WRAP, "wrap"},
	{pkcs11.CKF_UNWRAP, "unwrap"}, {pkcs11.CKF_DERIVE, "derive"}, {pkcs11.CKF_EXTENSION, "extension"},
}

func mechFlags(f uint) []string {
	out := []string{}
	for _, n := range flagNames {
		if f&n.f != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// mechInfos reads C_GetMechanismInfo once per mechanism.
type mechInfos struct {
	tok  *derive.Token
	info map[uint]*pkcs11.MechanismInfo
	errs map[uint]error
}

func newMechInfos(tok *derive.Token) *mechInfos {
	return &mechInfos{tok: tok, info: map[uint]*pkcs11.MechanismInfo{}, errs: map[uint]error{}}
}

// get returns the mechanism's info if the token lists it and answers.
func (m *mechInfos) get(mech uint) (*pkcs11.MechanismInfo, error) {
	if i, ok := m.info[mech]; ok {
		return i, m.errs[mech]
	}
	var info *pkcs11.MechanismInfo
	var err error
	if m.tok.Lists(mech) {
		var mi pkcs11.MechanismInfo
		mi, err = m.tok.MechanismInfo(mech)
		if err == nil {
			info = &mi
		}
	}
	m.info[mech], m.errs[mech] = info, err
	return info, err
}

// section is the report's mechanism list.
func (m *mechInfos) section() []Mechanism {
	var out []Mechanism
	for _, g := range mechGroups {
		for _, mech := range g.mechs {
			e := Mechanism{Name: mechName(mech), Code: fmt.Sprintf("%#x", mech), Group: g.group, Listed: m.tok.Lists(mech)}
			info, err := m.get(mech)
			if info != nil {
				e.Flags, e.MinKeySize, e.MaxKeySize = mechFlags(info.Flags), info.MinKeySize, info.MaxKeySize
			}
			if err != nil {
				e.InfoCKR = ckrName(err)
				if e.InfoCKR == "" {
					e.InfoCKR = err.Error()
				}
			}
			out = append(out, e)
		}
	}
	return out
}

// mechName is ckm.Name, knowing a few PKCS#11 3.0 names it does not.
func mechName(m uint) string {
	if m == ckmAESKeyWrapKWP {
		return "CKM_AES_KEY_WRAP_KWP"
	}
	return ckm.Name(m)
}

// ckfNames names CKF_ flags: "CKF_UNWRAP", "CKF_ENCRYPT and CKF_UNWRAP".
func ckfNames(flags uint) string {
	names := mechFlags(flags)
	for i, n := range names {
		names[i] = "CKF_" + strings.ToUpper(strings.ReplaceAll(n, "-", "_"))
	}
	return strings.Join(names, " and ")
}

// useOf names what CKF_ flags say a strategy uses a mechanism for:
// derive, sign (MAC), unwrap or encrypt, joined by "+" when it needs
// several (cmac-unwrap's ECB mechanism: encrypt+unwrap).
func useOf(flags uint) string { return strings.Join(mechFlags(flags), "+") }
