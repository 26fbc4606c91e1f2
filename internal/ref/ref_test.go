package ref

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eq(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if w := strings.ToLower(strings.ReplaceAll(want, " ", "")); hex.EncodeToString(got) != w {
		t.Errorf("%s:\n got %x\nwant %s", what, got, w)
	}
}

func block(t *testing.T, c Cipher, key string) interface {
	BlockSize() int
	Encrypt(dst, src []byte)
	Decrypt(dst, src []byte)
} {
	t.Helper()
	b, err := NewBlock(c, unhex(t, key))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FIPS 197 Appendix C.1 and C.3 (AES-128 and AES-256).
func TestAESFIPS197(t *testing.T) {
	for _, v := range []struct{ key, pt, ct string }{
		{"000102030405060708090a0b0c0d0e0f", "00112233445566778899aabbccddeeff", "69c4e0d86a7b0430d8cdb78070b4c55a"},
		{"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "00112233445566778899aabbccddeeff", "8ea2b7ca516745bfeafc49904b496089"},
	} {
		b := block(t, AES, v.key)
		ct, err := EncryptECB(b, unhex(t, v.pt))
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "FIPS 197 encrypt", ct, v.ct)
		pt, _ := DecryptECB(b, ct)
		eq(t, "FIPS 197 decrypt", pt, v.pt)
	}
}

// NIST SP 800-38A F.1.1/F.1.2 (ECB-AES128) and F.2.1/F.2.2 (CBC-AES128).
func TestAESSP80038A(t *testing.T) {
	b := block(t, AES, "2b7e151628aed2a6abf7158809cf4f3c")
	pt := "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
	ecb := "3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf 43b1cd7f598ece23881b00e3ed030688 7b0c785e27e8ad3f8223207104725dd4"
	cbc := "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2 73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7"
	iv := unhex(t, "000102030405060708090a0b0c0d0e0f")
	got, err := EncryptECB(b, unhex(t, pt))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "F.1.1 ECB-AES128.Encrypt", got, ecb)
	got, _ = DecryptECB(b, unhex(t, ecb))
	eq(t, "F.1.2 ECB-AES128.Decrypt", got, pt)
	got, err = EncryptCBC(b, iv, unhex(t, pt))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "F.2.1 CBC-AES128.Encrypt", got, cbc)
	got, _ = DecryptCBC(b, iv, unhex(t, cbc))
	eq(t, "F.2.2 CBC-AES128.Decrypt", got, pt)
}

// FIPS 81 Appendix B, Tables B1 (ECB) and C1 (CBC): DES with key
// 0123456789abcdef and the plaintext "Now is the time for all ".
func TestDESFIPS81(t *testing.T) {
	b := block(t, DES, "0123456789abcdef")
	pt := "4e6f772069732074 68652074696d6520 666f7220616c6c20"
	ecb := "3fa40e8a984d4815 6a271787ab8883f9 893d51ec4b563b53"
	cbc := "e5c7cdde872bf27c 43e934008c389c0f 683788499a7c05f6"
	iv := unhex(t, "1234567890abcdef")
	got, _ := EncryptECB(b, unhex(t, pt))
	eq(t, "FIPS 81 ECB", got, ecb)
	got, _ = DecryptECB(b, unhex(t, ecb))
	eq(t, "FIPS 81 ECB decrypt", got, pt)
	got, _ = EncryptCBC(b, iv, unhex(t, pt))
	eq(t, "FIPS 81 CBC", got, cbc)
	got, _ = DecryptCBC(b, iv, unhex(t, cbc))
	eq(t, "FIPS 81 CBC decrypt", got, pt)
}

// NIST SP 800-67 Rev. 1/2, the TDEA ECB example: three keys and the
// plaintext "The qufck brown fox jump".
func TestTDEASP80067(t *testing.T) {
	b := block(t, DES3, "0123456789abcdef 23456789abcdef01 456789abcdef0123")
	pt := "5468652071756663 6b2062726f776e20 666f78206a756d70"
	ct := "a826fd8ce53b855f cce21c8112256fe6 68d5c05dd9b6b900"
	got, _ := EncryptECB(b, unhex(t, pt))
	eq(t, "SP 800-67 TDEA ECB", got, ct)
	got, _ = DecryptECB(b, unhex(t, ct))
	eq(t, "SP 800-67 TDEA ECB decrypt", got, pt)
	// Two-key TDEA is three-key TDEA with K3 = K1.
	two := block(t, DES3, "0123456789abcdef 23456789abcdef01")
	three := block(t, DES3, "0123456789abcdef 23456789abcdef01 0123456789abcdef")
	a, _ := EncryptECB(two, unhex(t, pt))
	c, _ := EncryptECB(three, unhex(t, pt))
	if !bytes.Equal(a, c) {
		t.Error("two-key TDEA is not K1 K2 K1")
	}
	if _, err := NewBlock(DES3, make([]byte, 8)); err == nil {
		t.Error("an 8-byte Triple DES key was accepted")
	}
}

func TestErrors(t *testing.T) {
	b := block(t, AES, "000102030405060708090a0b0c0d0e0f")
	if _, err := EncryptECB(b, make([]byte, 15)); err == nil {
		t.Error("EncryptECB took a partial block")
	}
	if _, err := DecryptECB(b, make([]byte, 17)); err == nil {
		t.Error("DecryptECB took a partial block")
	}
	if _, err := EncryptCBC(b, make([]byte, 8), make([]byte, 16)); err == nil {
		t.Error("EncryptCBC took a short IV")
	}
	if _, err := DecryptCBC(b, make([]byte, 16), make([]byte, 8)); err == nil {
		t.Error("DecryptCBC took a partial block")
	}
	if _, err := NewBlock(Cipher(9), nil); err == nil {
		t.Error("NewBlock took an unknown cipher")
	}
	if _, err := HKDFExpand(sha256.New, make([]byte, 32), nil, 255*32+1); err == nil {
		t.Error("HKDFExpand made more than 255 blocks")
	}
}

// The check value of the all-zero AES-128 key: AES_0(0) =
// 66e94bd4ef8a2c3b884cfa59ca342b2e (the AES known-answer tests'
// first value, NIST AESAVS ECBVarTxt128 COUNT=0 / ECBVarKey128 with a zero key).
func TestCheckValue(t *testing.T) {
	kcv, err := CheckValue(AES, make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "AES KCV", kcv, "66e94b")
	// FIPS 81's DES key: E_K(0) from the ECB reference.
	kcv, _ = CheckValue(DES, unhex(t, "0123456789abcdef"))
	b := block(t, DES, "0123456789abcdef")
	z, _ := EncryptECB(b, make([]byte, 8))
	if !bytes.Equal(kcv, z[:3]) {
		t.Errorf("DES KCV %x, E_K(0) %x", kcv, z)
	}
	if _, err := CheckValue(AES, make([]byte, 5)); err == nil {
		t.Error("CheckValue took a 5-byte AES key")
	}
}

// RFC 4493 §4 (= NIST SP 800-38B D.1): AES-128 CMAC, subkeys and examples
// 1 to 4.
func TestCMACRFC4493(t *testing.T) {
	b := block(t, AES, "2b7e151628aed2a6abf7158809cf4f3c")
	l := make([]byte, 16)
	b.Encrypt(l, l)
	k1 := dbl(l)
	eq(t, "K1", k1, "fbeed618357133667c85e08f7236a8de")
	eq(t, "K2", dbl(k1), "f7ddac306ae266ccf90bc11ee46d513b")
	msg := unhex(t, "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710")
	for _, v := range []struct {
		n   int
		mac string
	}{
		{0, "bb1d6929e95937287fa37d129b756746"},
		{16, "070a16b46b4d4144f79bdd9dd04a287c"},
		{40, "dfa66747de9ae63030ca32611497c827"},
		{64, "51f0bebf7e3b9d92fc49741779363cfe"},
	} {
		eq(t, "CMAC example", CMAC(b, msg[:v.n]), v.mac)
	}
	prf, err := AESCMAC.MAC(unhex(t, "2b7e151628aed2a6abf7158809cf4f3c"), msg[:16])
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "AESCMAC PRF", prf, "070a16b46b4d4144f79bdd9dd04a287c")
	if _, err := AESCMAC.MAC(make([]byte, 7), nil); err == nil {
		t.Error("AESCMAC took a 7-byte key")
	}
}

// A Triple DES CMAC vector of NIST CAVP (CMACGenTDES, three-key), as
// carried by OpenSSL's evpmac_cmac_des.txt: exercises the 64-bit block
// (R_64 = 0x1B) and a full last block.
func TestCMACTDES(t *testing.T) {
	b := block(t, DES3, "89BCD952A8C8AB371AF48AC7D07085D5EFF702E6D62CDC23")
	eq(t, "TDES CMAC", CMAC(b, unhex(t, "FA620C1BBE97319E9A0CF0492121F7A20EB08A6A709DCBD00AAF38E4F99E754E")), "8F49A1B7D6AA2258")
}

// NIST CAVP KBKDF (SP 800-108) counter mode, CTRLOCATION=BEFORE_FIXED,
// RLEN=32_BITS (CounterMode.zip, KDFCTR_gen.rsp): the PRF's input is
// [i]_32 || FixedInputData.
func TestKDFCounterCAVP(t *testing.T) {
	for _, v := range []struct {
		prf               PRF
		l                 int // bits
		ki, fixed, output string
	}{
		{HMACSHA256, 128, "dd1d91b7d90b2bd3138533ce92b272fbf8a369316aefe242e659cc0ae238afe0",
			"01322b96b30acd197979444e468e1c5c6859bf1b1cf951b7e725303e237e46b864a145fab25e517b08f8683d0315bb2911d80a0e8aba17f3b413faac",
			"10621342bfb0fd40046c0e29f2cfdbf0"},
		{HMACSHA256, 320, "c4bedbddb66493e7c7259a3bbbc25f8c7e0ca7fe284d92d431d9cd99a0d214ac",
			"1c69c54766791e315c2cc5c47ecd3ffab87d0d273dd920e70955814c220eacace6a5946542da3dfe24ff626b4897898cafb7db83bdff3c14fa46fd4b",
			"1da47638d6c9c4d04d74d4640bbd42ab814d9e8cc22f4326695239f96b0693f12d0dd1152cf44430"},
		{HMACSHA384, 128, "216ed044769c4c3908188ece61601af8819c30f501d12995df608e06f5e0e607ab54f542ee2da41906dfdb4971f20f9d",
			"638e9506a2c7be69ea346b84629a010c0e225b7548f508162c89f29c1ddbfd70472c2b58e7dc8aa6a5b06602f1c8ed4948cda79c62708218e26ac0e2",
			"d4b144bb40c7cabed13963d7d4318e72"},
		{HMACSHA512, 128, "dd5dbd45593ee2ac139748e7645b450f223d2ff297b73fd71cbcebe71d41653c950b88500de5322d99ef18dfdd30428294c4b3094f4c954334e593bd982ec614",
			"b50b0c963c6b3034b8cf19cd3f5c4ebe4f4985af0c03e575db62e6fdf1ecfe4f28b95d7ce16df85843246e1557ce95bb26cc9a21974bbd2eb69e8355",
			"e5993bf9bd2aa1c45746042e12598155"},
		{HMACSHA512, 320, "a9f4a2c5af839867f5db5a1e520ab3cca72a166ca60de512fd7fe7e64cf94f92cf1d8b636175f293e003275e021018c3f0ede495997a505ec9a2afeb0495be57",
			"8e9db3335779db688bcfe096668d9c3bc64e193e3529c430e68d09d56c837dd6c0f94678f121a68ee1feea4735da85a49d34a5290aa39f7b40de435f",
			"6db880daac98b078ee389a2164252ded61322d661e2b49247ea921e544675d8f17af2bf66dd40d81"},
		{AESCMAC, 128, "c10b152e8c97b77e18704e0f0bd38305",
			"98cd4cbbbebe15d17dc86e6dbad800a2dcbd64f7c7ad0e78e9cf94ffdba89d03e97eadf6c4f7b806caf52aa38f09d0eb71d71f497bcc6906b48d36c4",
			"26faf61908ad9ee881b8305c221db53f"},
		{AESCMAC, 320, "b2fcf854b1029888aeb0274ca09bb21a",
			"a6b84baae7a6ceb1d63ed704757500c510c0a8bdc22d2f42af09f79c815f37f33b67dad0b30f428fc1e2d355f7f91f65acbedd2fdd5b8c38dd890407",
			"fe4c2c0242c5a295c008aeb87ae0815171de6173773292347f4f5ec07185c3f860b5667c199aad55"},
	} {
		fixed := unhex(t, v.fixed)
		got, err := KDFCounter(v.prf, unhex(t, v.ki), v.l/8, func(i uint32) []byte {
			return append(BE(uint64(i), 32), fixed...)
		})
		if err != nil {
			t.Fatal(err)
		}
		eq(t, v.prf.Name+" counter", got, v.output)
	}
}

// NIST CAVP KBKDF feedback mode (FeedbackModeNOzeroiv.zip), as carried by
// public KBKDF implementations' tests: CMAC-AES128 with the counter after
// the iteration value (RLEN=16, no IV), CMAC-AES128 without a counter and
// with a 128-bit IV, and HMAC-SHA512 without counter or IV.
func TestKDFFeedbackCAVP(t *testing.T) {
	for _, v := range []struct {
		name                  string
		prf                   PRF
		counterBits           int // 0: no counter
		ki, iv, fixed, output string
	}{
		{"CMAC_AES128 AFTER_ITER RLEN=16", AESCMAC, 16, "d7f5fa7551645de0b36aecd46565f954", "",
			"fb5294ed40a0e4aa70a7be13913070a4c5cfc05f89b9f7dd26a493b8c63889c7c3b0b60dd6d598ffa296a426224c727a501946",
			"7164471f559812581a53aaf7fb6d6c53a1293115cda873887efcc7ce6b3a026b2d19f0d38db8590e218a2676df88f53cab3313ed63bd1e4828f3c066ea5eb1fd"},
		{"CMAC_AES128 no counter, IV", AESCMAC, 0, "5c996c922f65de97d4408373229814c6", "28dc945cb8337ab5336c3e9b5bad21c7",
			"62afe5fed91e797221a854336b0aadd8a05ad0e3c8345729897b2efcec5a1178a2fa4c063007b67a7015e0d6b7271ea8d86b44",
			"88a9aae193abdd3fe8143bab66014ae41dc2d12ea9d08f5871588fc5d827924eb9942989d7a36d4b3b107997566472cad5942bd13cb5cff32b9dae30f1bb6300"},
		{"HMAC_SHA512 no counter, no IV", HMACSHA512, 0,
			"91cce7832e1caf170f6961b6b65805c4cb487f719819a2343149040cf9d88d09d112db117c97dea0e15d7c0fa03727082c0909f420a10b9b082958ecb9ad3d21", "",
			"1a20ea91b6104c8d36b0353d7a2880c1e167b572857b78204e9206cb6ea06cace3555e87442debbc780f94f223c22a5819568a",
			"819fe4adc7d6e06ec9700e4ba19291b9b2dd7c76b6ee85f3eec5f2bc5928311596a4a316875555a0ec467636122b3629d2f5ca092dbf620423c5650fc1a18a8b2cb1ffc8a1845751a5329a0d1a2a22119a1e129bb5c86d4c92cd6a189513ea8ea615b64e94fddfe2c79b3c50884454c7153103aba3af59cbb3ab35719e3291bb296bdce9d0a7d3f8a1c08cf68e5b74f556f3a389d89b5a55142b023bb0bde0899d3ed55f710a1bc0bc934aa736280fcdc90408417129fb0c57413b955ea8d919d59b3566a00edf54ff9d825c24d18f2fc6622ae0273982394953e45912f0967d6a398c446d8d9af7dd4048683ffd3415c318efe2a7f21a975cda34f84940c7c4995a"},
	} {
		fixed := unhex(t, v.fixed)
		n := len(v.output) / 2
		got, err := KDFFeedback(v.prf, unhex(t, v.ki), unhex(t, v.iv), n, func(i uint32, prev []byte) []byte {
			msg := append([]byte(nil), prev...)
			if v.counterBits > 0 {
				msg = append(msg, BE(uint64(i), v.counterBits)...)
			}
			return append(msg, fixed...)
		})
		if err != nil {
			t.Fatal(err)
		}
		eq(t, v.name, got, v.output)
	}
}

func TestEncodings(t *testing.T) {
	eq(t, "BE", BE(0x01020304, 32), "01020304")
	eq(t, "BE 8", BE(0x80, 8), "80")
	eq(t, "LE", LE(0x01020304, 32), "04030201")
	eq(t, "LE 16", LE(0x0102, 16), "0201")
}

// RFC 5869 Appendix A, test cases 1 and 3 (SHA-256; case 3 without salt or
// info). SHA-384 and SHA-512 run the same code with another hash.
func TestHKDFRFC5869(t *testing.T) {
	ikm := unhex(t, "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
	prk := HKDFExtract(sha256.New, unhex(t, "000102030405060708090a0b0c"), ikm)
	eq(t, "A.1 PRK", prk, "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
	okm, err := HKDF(sha256.New, ikm, unhex(t, "000102030405060708090a0b0c"), unhex(t, "f0f1f2f3f4f5f6f7f8f9"), 42)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "A.1 OKM", okm, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
	eq(t, "A.3 PRK", HKDFExtract(sha256.New, nil, ikm), "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04")
	okm, _ = HKDF(sha256.New, ikm, nil, nil, 42)
	eq(t, "A.3 OKM", okm, "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
	// HKDF-Expand alone (the expand-only mode) is A.1's second step.
	okm, _ = HKDFExpand(sha256.New, prk, unhex(t, "f0f1f2f3f4f5f6f7f8f9"), 42)
	eq(t, "A.1 expand", okm, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
	// SHA-512 runs the same code with a 64-byte HashLen.
	if len(HKDFExtract(sha512.New, nil, ikm)) != 64 {
		t.Error("SHA-512 PRK is not 64 bytes")
	}
}

// FIPS 180-4's "abc" example, split as K = "ab", data = "c".
func TestSHA256Concat(t *testing.T) {
	eq(t, "SHA-256(abc)", SHA256Concat([]byte("ab"), []byte("c")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
}

func TestCipherNames(t *testing.T) {
	if AES.String() != "aes" || DES3.String() != "des3" || DES.String() != "des" || Cipher(7).String() != "cipher(7)" {
		t.Error("cipher names")
	}
	if AES.BlockSize() != 16 || DES3.BlockSize() != 8 || DES.BlockSize() != 8 {
		t.Error("block sizes")
	}
}
