package derive

import (
	"strings"

	"github.com/miekg/pkcs11"
)

// Decrypt is the inverse-cipher derivation DK = D(data, K): the decryption
// of the derivation data under the base key, in ECB or CBC mode, keeping
// the leading bytes the output key needs. It is a different function from
// Encrypt — different keys — and a sound KDF when the other side computes D
// too. Nearly every token that can unwrap computes it (the Unwrap
// strategy): C_UnwrapKey exists to decrypt a key into the token.
//
// With ECB, DK = D_K(d_1) || ... || D_K(d_m); with CBC,
// DK_i = D_K(d_i) XOR d_(i-1), d_0 = IV.
type Decrypt struct {
	Cipher Cipher
	Mode   Mode
	// IV is the CBC initialisation vector, one block; empty for ECB.
	IV []byte
}

// Name returns "aes-ecb-decrypt", "des3-cbc-decrypt" and so on.
func (f Decrypt) Name() string { return cipherMode(f.Cipher, f.Mode, true) }

func (f Decrypt) validate(data []byte, out KeyType) error {
	return validateBlocks(f.Cipher, f.Mode, f.IV, data, out)
}

func (f Decrypt) checkBase(base *Key) error {
	if base.Cipher() != f.Cipher {
		return cipherKeyError(f.Name(), f.Cipher, base)
	}
	return nil
}

func (f Decrypt) profile(p *Profile) { p.setHex("iv", f.IV) }

func init() {
	register(parseDecrypt, "aes-ecb-decrypt", "aes-cbc-decrypt", "des3-ecb-decrypt", "des3-cbc-decrypt", "des-ecb-decrypt", "des-cbc-decrypt")
}

func parseDecrypt(name string, m map[string]string) (Function, error) {
	e, err := parseEncrypt(strings.TrimSuffix(name, "-decrypt"), m)
	if err != nil {
		return nil, err
	}
	f := e.(Encrypt)
	return Decrypt{Cipher: f.Cipher, Mode: f.Mode, IV: f.IV}, nil
}

// unwrapMechanism is the mechanism whose C_UnwrapKey computes f (the
// Unwrap strategy, unwrap.go).
func unwrapMechanism(f Decrypt) uint {
	switch {
	case f.Cipher == AES && f.Mode == ECB:
		return pkcs11.CKM_AES_ECB
	case f.Cipher == AES:
		return pkcs11.CKM_AES_CBC
	case f.Cipher == DES3 && f.Mode == ECB:
		return pkcs11.CKM_DES3_ECB
	case f.Cipher == DES3:
		return pkcs11.CKM_DES3_CBC
	case f.Mode == ECB:
		return pkcs11.CKM_DES_ECB
	}
	return pkcs11.CKM_DES_CBC
}
