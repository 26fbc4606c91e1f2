package verify

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/an10922"
	"github.com/p11derive/p11derive/derive/dukpt"
	"github.com/p11derive/p11derive/derive/emv"
	"github.com/p11derive/p11derive/derive/gp"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/derive/tr31"
	"github.com/p11derive/p11derive/internal/ref"
)

// testCase is one case of a catalog entry: a base key of published value,
// the scheme's derivation, and the known answer of each key it makes.
type testCase struct {
	scheme, entry string // the catalog entry's Scheme and Case
	variant       string
	source        string
	baseType      derive.KeyType
	base          []byte
	derive        func(ctx context.Context, tok *derive.Token, base *derive.Key, o scheme.Options) ([]*scheme.Result, error)
	want          []answer
}

// answer is a known answer: a derived key's value (its check value is
// computed here, in software), or only its published check value.
type answer struct {
	cipher ref.Cipher
	key    []byte
	check  string
}

func (a answer) kcv() string {
	if a.check != "" {
		return strings.ToLower(a.check)
	}
	v, err := ref.CheckValue(a.cipher, a.key)
	if err != nil {
		panic(fmt.Sprintf("verify: a known answer of the wrong length: %v", err))
	}
	return hex.EncodeToString(v)
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func des2(s string) answer   { return answer{cipher: ref.DES3, key: unhex(s)} }
func aesKey(b []byte) answer { return answer{cipher: ref.AES, key: b} }
func kcvs(s ...string) []answer {
	out := make([]answer, len(s))
	for i, c := range s {
		out[i] = answer{check: c}
	}
	return out
}

// one adapts a scheme call making one key.
func one(f func(ctx context.Context, tok *derive.Token, base *derive.Key, o scheme.Options) (*scheme.Result, error)) func(context.Context, *derive.Token, *derive.Key, scheme.Options) ([]*scheme.Result, error) {
	return func(ctx context.Context, tok *derive.Token, base *derive.Key, o scheme.Options) ([]*scheme.Result, error) {
		res, err := f(ctx, tok, base, o)
		if err != nil {
			return nil, err
		}
		return []*scheme.Result{res}, nil
	}
}

// Published base keys and inputs.
const (
	pyemvIMK = "0123456789ABCDEFFEDCBA9876543210" // pyemv's examples (github.com/knovichikhin/pyemv)
	gpKey    = "404142434445464748494A4B4C4D4E4F" // GlobalPlatform's default test key
	gpKDD    = "00010203040506070809"
	dukptBDK = "FEDCBA9876543210F1F1F1F1F1F1F1F1" // X9.24-3-2017 supplement, AES-128 BDK
	dukptIK  = "1234567890123456"
)

// SP 800-38A's AES keys, the EMV AES cases' master keys.
var aesKeys = map[int]string{
	16: "2b7e151628aed2a6abf7158809cf4f3c",
	24: "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
	32: "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
}

const emvSoftwareRef = "software reference from EMV Book 2's text on FIPS-197 AES (no published vector found)"

// refOptionC is EMV Book 2 A1.4.3 in software: Y is PAN || PSN
// left-padded with zeros to 16 bytes; MK = AES(IMK)[Y] for a 16-byte IMK,
// else the leftmost k bytes of AES(IMK)[Y] || AES(IMK)[Y ⊕ 'FF'*16].
func refOptionC(imk []byte, pan, psn string) []byte {
	if psn == "" {
		psn = "00"
	}
	x := pan + psn
	y := unhex(strings.Repeat("0", 32-len(x)) + x)
	data := y
	if len(imk) > 16 {
		ny := make([]byte, 16)
		for i := range y {
			ny[i] = ^y[i]
		}
		data = append(append([]byte{}, y...), ny...)
	}
	return refECB(imk, data)[:len(imk)]
}

// refAESSessionKey is A1.3.1 for an AES master key in software: AES(MK)[R]
// for AES-128, else the leftmost k bytes of AES(MK)[F1] || AES(MK)[F2],
// F1 and F2 being R with its third byte 'F0' and '0F'.
func refAESSessionKey(mk, r []byte) []byte {
	if len(mk) == 16 {
		return refECB(mk, r)
	}
	f1, f2 := append([]byte{}, r...), append([]byte{}, r...)
	f1[2], f2[2] = 0xF0, 0x0F
	return refECB(mk, append(f1, f2...))[:len(mk)]
}

func refECB(key, data []byte) []byte {
	b, err := ref.NewBlock(ref.AES, key)
	if err == nil {
		var out []byte
		if out, err = ref.EncryptECB(b, data); err == nil {
			return out
		}
	}
	panic(err)
}

func aesType(n int) derive.KeyType {
	kt, err := derive.ParseKeyType("aes", n)
	if err != nil {
		panic(err)
	}
	return kt
}

// cases are the cases of every computed catalog entry.
var cases = func() []testCase {
	var cs []testCase
	add := func(c testCase) { cs = append(cs, c) }

	// EMV (derive/emv).
	for _, v := range []struct {
		opt     emv.Option
		variant string
		mk      string
		src     string
	}{
		{emv.OptionA, "option A", "73AD54688CEF2934B0979857E3C719F1", "pyemv kd.py, derive_icc_mk_a example"},
		{emv.OptionB, "option B", "AD406D7F6D7570916D75E5DCAB8CF737", "pyemv kd.py, derive_icc_mk_b example"},
	} {
		opt := v.opt
		add(testCase{scheme: "emv-mk", entry: "options A and B", variant: v.variant, source: v.src,
			baseType: derive.KeyDES2, base: unhex(pyemvIMK), want: []answer{des2(v.mk)},
			derive: one(func(ctx context.Context, tok *derive.Token, k *derive.Key, o scheme.Options) (*scheme.Result, error) {
				return emv.ICCMasterKey(ctx, tok, k, opt, "12345678901234567", "01", o)
			})})
	}
	add(testCase{scheme: "emv-sk", entry: "Triple DES", variant: "ATC 001C", source: "pyemv kd.py, derive_common_sk example",
		baseType: derive.KeyDES2, base: unhex(pyemvIMK), want: []answer{des2("E9FB384AF807B940FEDCEA613461B0C4")},
		derive: one(func(ctx context.Context, tok *derive.Token, k *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return emv.SessionKey(ctx, tok, k, emv.ATC(0x001C, 8), o)
		})})
	for _, n := range []int{16, 24, 32} {
		imk := unhex(aesKeys[n])
		add(testCase{scheme: "emv-mk", entry: "option C (AES issuer master key)", variant: fmt.Sprintf("AES-%d", n*8),
			source: emvSoftwareRef, baseType: aesType(n), base: imk,
			want: []answer{aesKey(refOptionC(imk, "5413339000001513", "01"))},
			derive: one(func(ctx context.Context, tok *derive.Token, k *derive.Key, o scheme.Options) (*scheme.Result, error) {
				return emv.ICCMasterKey(ctx, tok, k, emv.OptionC, "5413339000001513", "01", o)
			})})
		entry := "AES-192/256 master key"
		if n == 16 {
			entry = "AES-128 master key"
		}
		add(testCase{scheme: "emv-sk", entry: entry, variant: fmt.Sprintf("AES-%d, ATC 001C", n*8),
			source: emvSoftwareRef, baseType: aesType(n), base: imk,
			want: []answer{aesKey(refAESSessionKey(imk, emv.ATC(0x001C, 16)))},
			derive: one(func(ctx context.Context, tok *derive.Token, k *derive.Key, o scheme.Options) (*scheme.Result, error) {
				return emv.SessionKey(ctx, tok, k, emv.ATC(0x001C, 16), o)
			})})
	}

	// GlobalPlatform (derive/gp).
	for _, v := range []struct {
		k    gp.SCP02Key
		name string
		key  string
	}{{gp.SCP02SENC, "S-ENC", "25c9794a1205ff244f5fa0378d2f8d59"}, {gp.SCP02CMAC, "C-MAC", "9bed98891580c3b245fe9ec58bfa8d2a"},
		{gp.SCP02DEK, "DEK", "0e51fdf196141f227a57bd154012fd39"}} {
		k := v.k
		add(testCase{scheme: "scp02", entry: "S-ENC, C-MAC, R-MAC, DEK", variant: v.name + ", sequence 0001",
			source: "openjavacard-tools SCP02DerivationTest", baseType: derive.KeyDES2, base: unhex(gpKey), want: []answer{des2(v.key)},
			derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
				return gp.SCP02SessionKey(ctx, tok, b, k, unhex("0001"), o)
			})})
	}
	for _, v := range []struct {
		k    gp.SCP03Key
		name string
		key  string
	}{{gp.SCP03SENC, "S-ENC", "258a78866f41482bef482dc8ca976ccd"}, {gp.SCP03SMAC, "S-MAC", "053db6abc7fdf3b63a0d965ee16b0255"},
		{gp.SCP03SRMAC, "S-RMAC", "eda0b4f2ec0345bfc50f3bc59cfef936"}} {
		k := v.k
		add(testCase{scheme: "scp03", entry: "S-ENC, S-MAC, S-RMAC", variant: v.name,
			source: "openjavacard-tools SCP03DerivationTest (testDeriveSCP03_000010)", baseType: derive.KeyAES128, base: unhex(gpKey),
			want: []answer{aesKey(unhex(v.key))},
			derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
				return gp.SCP03SessionKey(ctx, tok, b, k, unhex("A7F76C713F0A713D"), unhex("31900058C1C451A2"), o)
			})})
	}
	div := func(m gp.Method, kdd []byte) func(context.Context, *derive.Token, *derive.Key, scheme.Options) ([]*scheme.Result, error) {
		return func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) ([]*scheme.Result, error) {
			var opts [3]scheme.Options
			for i, k := range gp.StaticKeys {
				opts[i] = o
				opts[i].Label = o.Label + "-" + k.String()
			}
			return gp.DiversifyKeys(ctx, tok, b, m, kdd, opts)
		}
	}
	add(testCase{scheme: "gp-div", entry: "emv, visa2 (ENC, MAC, DEK)", variant: "emv", source: "GlobalPlatformPro TestPlaintextKeys, testDiversification_EMV_SCP02",
		baseType: derive.KeyDES2, base: unhex(gpKey), want: kcvs("c33013", "6f4ca6", "bb8179"), derive: div(gp.MethodEMV, unhex(gpKDD))})
	add(testCase{scheme: "gp-div", entry: "emv, visa2 (ENC, MAC, DEK)", variant: "visa2", source: "GlobalPlatformPro TestPlaintextKeys, testDiversification_VISA2_SCP02",
		baseType: derive.KeyDES2, base: unhex(gpKey), want: kcvs("2be598", "58da38", "3c328e"), derive: div(gp.MethodVISA2, unhex(gpKDD))})
	// GlobalPlatformPro's kdf3 check values of AES keys are GlobalPlatform's
	// convention (a block of '01' bytes encrypted), not ecb's: only its
	// external vector, a full key, is a known answer here.
	add(testCase{scheme: "gp-div", entry: "kdf3 (ENC, MAC, DEK)", variant: "AES-256, ENC", source: "GlobalPlatformPro TestPlaintextKeys, testDiversification_KDF3_ExternalVector",
		baseType: derive.KeyAES256, base: unhex("8C72C72CF908411653018807950D82FBAD947562F0828A0B10B8B9606ABF3BCD"),
		want: []answer{aesKey(unhex("9AAC5D0B3601F89438A0D9D0B6B256CFB47E6462DFA5228D3420C4AC7C224781"))},
		derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return gp.DiversifyKey(ctx, tok, b, gp.MethodKDF3, gp.StaticENC, unhex("D9B1DE5D0362DEDCE4FB"), o)
		})})

	// NXP AN10922 (derive/an10922).
	add(testCase{scheme: "an10922", entry: "AES-128, M of 16 to 31 bytes", variant: "UID 04782E21801D80, AID 3042F5, system identifier 4E585020416275",
		source: "NXP AN10922 §2.2.1, AES-128 worked example", baseType: derive.KeyAES128, base: unhex("00112233445566778899AABBCCDDEEFF"),
		want: []answer{aesKey(unhex("A8DD63A3B89D54B37CA802473FDA9175"))},
		derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return an10922.DiversifyAES128(ctx, tok, b, an10922.Input(unhex("04782E21801D80"), unhex("3042F5"), unhex("4E585020416275")), o)
		})})

	// AES DUKPT (derive/dukpt).
	const dukptEntry = "AES-128/192/256 BDK: IK, transaction keys, working keys"
	const dukptSrc = "ANSI X9.24-3-2017 supplement test vectors"
	ksn1 := unhex(dukptIK + "00000001")
	add(testCase{scheme: "dukpt", entry: dukptEntry, variant: "AES-128 BDK: initial key", source: dukptSrc,
		baseType: derive.KeyAES128, base: unhex(dukptBDK), want: []answer{aesKey(unhex("1273671EA26AC29AFA4D1084127652A1"))},
		derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return dukpt.InitialKey(ctx, tok, b, unhex(dukptIK), o)
		})})
	add(testCase{scheme: "dukpt", entry: dukptEntry, variant: "AES-128 BDK: transaction key, counter 1", source: dukptSrc,
		baseType: derive.KeyAES128, base: unhex(dukptBDK), want: []answer{aesKey(unhex("4F21B565BAD9835E112B6465635EAE44"))},
		derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return dukpt.DeriveTransactionKey(ctx, tok, b, ksn1, o)
		})})
	add(testCase{scheme: "dukpt", entry: dukptEntry, variant: "AES-128 BDK: PIN encryption working key, counter 1", source: dukptSrc,
		baseType: derive.KeyAES128, base: unhex(dukptBDK), want: []answer{aesKey(unhex("AF8CB133A78F8DC2D1359F18527593FB"))},
		derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return dukpt.DeriveWorkingKey(ctx, tok, b, ksn1, dukpt.PINEncryption, dukpt.AES128, o)
		})})
	add(testCase{scheme: "dukpt", entry: dukptEntry, variant: "AES-256 BDK: initial key", source: dukptSrc,
		baseType: derive.KeyAES256, base: unhex(dukptBDK + dukptBDK),
		want: []answer{aesKey(unhex("CE9CE0C101D1138F97FB6CAD4DF045A7083D4EAE2D35A31789D01CCF0949550F"))},
		derive: one(func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) (*scheme.Result, error) {
			return dukpt.InitialKey(ctx, tok, b, unhex(dukptIK), o)
		})})

	// TR-31 (derive/tr31): KBEK and KBAK.
	for _, v := range []struct {
		entry, variant string
		src            string
		ver            tr31.Version
		kt             derive.KeyType
		kbpk           string
		kbek, kbak     string
	}{
		{"version D (AES)", "AES-256 KBPK", "TR-31:2018 A.7.4", tr31.VersionD, derive.KeyAES256, "88E1AB2A2E3DD38C1FA039A536500CC8A87AB9D62DC92C01058FA79F44657DE6",
			"396C9382A6E2E66A088774E1D6E46541F5EAD67D7204F8DD0D7AE8FDA334D3AC", "4EF24317696213840451890756757E573E0673483888F9B7F9B7517827F95022"},
		{"version B (TDES)", "TDES KBPK", "TR-31:2018 A.7.2.2", tr31.VersionB, derive.KeyDES2, "DD7515F2BFC17F85CE48F3CA25CB21F6",
			"698832F8778A7CFCBC79559DAB07B88A", "DD6CEEC1782D8453671BF8358AF9DB47"},
		{"versions A and C (TDES variant)", "version A", "TR-31:2018 A.7.2.1", tr31.VersionA, derive.KeyDES2, "89E88CF7931444F334BD7547FC3F380C",
			"CCADC9B2D65101B671F83002B97A7D49", "C4A5C1BADE5909BE79F0380AB1727541"},
		{"versions A and C (TDES variant)", "version C", "TR-31:2018 A.7.3.1", tr31.VersionC, derive.KeyDES2, "B8ED59E0A279A295E9F5ED7944FD06B9",
			"FDA81CA5E73CE7D0ACB0A83C01B843FC", "F5A014ADEF34EFD8A4B8A03409B04BF4"},
	} {
		ver := v.ver
		c := ref.DES3
		if v.kt.CKK() == derive.KeyAES128.CKK() {
			c = ref.AES
		}
		add(testCase{scheme: "tr31", entry: v.entry, variant: v.variant + " (KBEK, KBAK)", source: v.src, baseType: v.kt, base: unhex(v.kbpk),
			want: []answer{{cipher: c, key: unhex(v.kbek)}, {cipher: c, key: unhex(v.kbak)}},
			derive: func(ctx context.Context, tok *derive.Token, b *derive.Key, o scheme.Options) ([]*scheme.Result, error) {
				ko, ao := o, o
				ko.Label, ao.Label = o.Label+"-kbek", o.Label+"-kbak"
				e, a, err := tr31.Keys(ctx, tok, b, ver, ko, ao)
				if err != nil {
					return nil, err
				}
				return []*scheme.Result{e, a}, nil
			}})
	}
	return cs
}()
