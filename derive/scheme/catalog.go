package scheme

import (
	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/mechanisms"
)

// Status says whether p11derive computes a scheme (or a case of it) inside
// a token.
type Status string

// The statuses of a catalog entry.
const (
	// Computed: the scheme's package computes it in the token, with the
	// listed mechanisms (or, for the encryption-based schemes, any exact
	// strategy of package derive).
	Computed Status = "computed"
	// ComputedUnverified: computed on tokens that run the mechanism, but no
	// lab token does, so no published vector was reproduced.
	ComputedUnverified Status = "computed, unverified"
	// NotComputable: needs an operation no standard PKCS#11 mechanism
	// performs inside a token; refused with ErrNotComputable.
	NotComputable Status = "not computable"
	// NotOffered: not implemented by p11derive (see Note).
	NotOffered Status = "not offered"
)

// Entry is one scheme, or one case of a scheme, in the catalog.
type Entry struct {
	Scheme   string // "emv-mk", "an10922", ... (the p11derive scheme command's names)
	Case     string // "option A", "M of 1 to 15 bytes", ...
	Standard string // the standard and section
	Status   Status
	// Mechanisms the token must run (for Computed entries). For the
	// encryption-based schemes this is the native strategy's mechanism;
	// package derive also computes them by its other exact strategies.
	Mechanisms []uint
	Note       string
}

// Catalog lists the schemes and the cases p11derive knows, with what each
// needs and what is refused and why — for reports such as the probe's.
func Catalog() []Entry {
	sp := uint(mechanisms.CKM_SP800_108_COUNTER_KDF)
	return []Entry{
		{"emv-mk", "options A and B", "EMV 4.3 Book 2 A1.4.1, A1.4.2", Computed, []uint{pkcs11.CKM_DES3_ECB_ENCRYPT_DATA},
			"3DES-ECB of Y || ~Y into a DES2 key; option B's SHA-1 and decimalisation work on public data"},
		{"emv-sk", "Triple DES", "EMV 4.3 Book 2 A1.3.1", Computed, []uint{pkcs11.CKM_DES3_ECB_ENCRYPT_DATA}, ""},
		{"emv-mk", "option C (AES issuer master key)", "EMV Book 2 A1.4.3", Computed, []uint{pkcs11.CKM_AES_ECB_ENCRYPT_DATA},
			"AES-ECB of Y (AES-128) or Y || ~Y (AES-192/256, leftmost k bytes); no published vector found: checked against a software reference from the standard's text"},
		{"emv-sk", "AES-128 master key", "EMV 4.3 Book 2 A1.3.1", Computed, []uint{pkcs11.CKM_AES_ECB_ENCRYPT_DATA},
			"no published vector found; checked against FIPS-197 AES"},
		{"emv-sk", "AES-192/256 master key", "EMV 4.3 Book 2 A1.3.1", Computed, []uint{pkcs11.CKM_AES_ECB_ENCRYPT_DATA},
			"leftmost k bytes of AES(MK)[F1] || AES(MK)[F2]; no published vector found: checked against a software reference from the standard's text"},
		{"scp02", "S-ENC, C-MAC, R-MAC, DEK", "GlobalPlatform Card Spec v2.2 E.4.1", Computed, []uint{pkcs11.CKM_DES3_CBC_ENCRYPT_DATA}, ""},
		{"scp03", "S-ENC, S-MAC, S-RMAC", "GlobalPlatform Amendment D §6.2.1, §4.1.5", Computed, []uint{sp, pkcs11.CKM_AES_CMAC},
			"SP 800-108 counter mode, AES-CMAC PRF, GP layout"},
		{"scp03", "S-DEK", "GlobalPlatform Amendment D §6.2.1", NotOffered, nil,
			"SCP03 defines no session DEK: the static Key-DEK is used as is"},
		{"gp-div", "emv, visa2 (ENC, MAC, DEK)", "EMV CPS 1.1 card key diversification; VISA2", Computed, []uint{pkcs11.CKM_DES3_ECB_ENCRYPT_DATA},
			"3DES-ECB of KDD bytes || 'F0' || k || KDD bytes || '0F' || k into a DES2 key, per static key"},
		{"gp-div", "kdf3 (ENC, MAC, DEK)", "SCP03 KDF (GlobalPlatformPro kdf3)", Computed, []uint{sp, pkcs11.CKM_AES_CMAC},
			"SP 800-108 counter mode, AES-CMAC PRF, layout counter:8,data with data '000000' || k || '00' || KDD"},
		{"an10922", "AES-128, M of 16 to 31 bytes", "NXP AN10922, AES-128 key diversification", Computed, []uint{sp, pkcs11.CKM_AES_CMAC},
			"SP 800-108 counter mode, layout counter:8,data"},
		{"an10922", "AES-128, M of 1 to 15 bytes", "NXP AN10922, AES-128 key diversification", NotComputable, nil,
			"AN10922 pads to two blocks and masks with CMAC's K2; a token's CMAC pads to one block"},
		{"an10922", "AES-192", "NXP AN10922, AES-192 key diversification", NotComputable, nil,
			"XORs halves of two CMAC outputs: an XOR of two secret values"},
		{"an10922", "2TDEA, 3TDEA", "NXP AN10922, 2TDEA and 3TDEA key diversification", NotOffered, nil,
			"needs a TDES-CMAC PRF that no lab token runs"},
		{"dukpt", "AES-128/192/256 BDK: IK, transaction keys, working keys", "ANSI X9.24-3-2017 §6", Computed, []uint{pkcs11.CKM_AES_ECB_ENCRYPT_DATA},
			"intermediates: session objects with CKA_DERIVE only, destroyed as soon as used"},
		{"dukpt", "TDES DUKPT", "ANSI X9.24-1 (TDES DUKPT)", NotComputable, nil,
			"its key register arithmetic XORs secret values with each other"},
		{"tr31", "version D (AES)", "ANSI X9.143-2021 §7.2.2; TR-31-2018 A.7.4", Computed, []uint{sp, pkcs11.CKM_AES_CMAC},
			"SP 800-108 counter mode, AES-CMAC PRF, TR-31 layout"},
		{"tr31", "version B (TDES)", "ANSI X9.143-2021 §7.2.1; TR-31-2018 A.7.2.2", ComputedUnverified, []uint{sp, pkcs11.CKM_DES3_CMAC},
			"SP 800-108 with CKM_DES3_CMAC as PRF: neither lab token runs it (refused there)"},
		{"tr31", "versions A and C (TDES variant)", "TR-31-2018 key variant binding; A.7.2.1, A.7.3.1", Computed, []uint{pkcs11.CKM_XOR_BASE_AND_DATA},
			"the KBPK XORed with a public constant"},
	}
}

// EntryStatus is a catalog entry on one token.
type EntryStatus struct {
	Entry
	// Listed reports, per mechanism, whether the token lists it. Tokens do
	// not always list what they run (NSS softoken's key database slot runs
	// the *_ENCRYPT_DATA mechanisms unlisted), and a PRF mechanism listed
	// for MACs may be refused as a KDF's PRF: only a derivation proves it.
	Listed []bool
}

// Check reports, for each catalog entry, which of its mechanisms the token
// lists. It makes no call but C_GetMechanismList (once per Token).
func Check(tok *derive.Token) []EntryStatus {
	var out []EntryStatus
	for _, e := range Catalog() {
		s := EntryStatus{Entry: e}
		for _, m := range e.Mechanisms {
			s.Listed = append(s.Listed, tok.Lists(m))
		}
		out = append(out, s)
	}
	return out
}

// MechanismName is a mechanism's CKM_ name.
func MechanismName(m uint) string { return ckm.Name(m) }
