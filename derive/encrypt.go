package derive

import (
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/mechanisms"
)

// Encrypt is DK = E(data, K): the encryption of the derivation data under the
// base key, in ECB or CBC mode, keeping the leading bytes of the ciphertext
// that the output key needs.
//
// With ECB, DK = E_K(d_1) || ... || E_K(d_m). With CBC, c_0 = IV,
// c_i = E_K(c_(i-1) XOR d_i) and DK = c_1 || ... || c_m. The data must be a
// whole number of blocks and at least as long as the output key.
type Encrypt struct {
	Cipher Cipher
	Mode   Mode
	// IV is the CBC initialisation vector, one block long. It must be empty
	// for ECB.
	IV []byte
}

// Name returns the function's name: "aes-ecb", "des3-cbc" and so on.
func (f Encrypt) Name() string { return cipherMode(f.Cipher, f.Mode, false) }

func (f Encrypt) checkBase(base *Key) error {
	if base.Cipher() != f.Cipher {
		return cipherKeyError(f.Name(), f.Cipher, base)
	}
	return nil
}

func (f Encrypt) validate(data []byte, out KeyType) error {
	return validateBlocks(f.Cipher, f.Mode, f.IV, data, out)
}

// zeroBlockInput reports whether some block enters the cipher as the zero
// block, which makes that block of DK equal to E_K(0^n): the value whose
// leading bytes are K's published check value.
func (f Encrypt) zeroBlockInput(data []byte) bool {
	n := f.Cipher.BlockSize()
	if f.Mode == CBC {
		for i := 0; i < n; i++ {
			if data[i]^f.IV[i] != 0 {
				return false
			}
		}
		return true
	}
	for off := 0; off < len(data); off += n {
		if isZero(data[off : off+n]) {
			return true
		}
	}
	return false
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func init() {
	register(parseEncrypt, "aes-ecb", "aes-cbc", "des3-ecb", "des3-cbc", "des-ecb", "des-cbc")
}

func parseEncrypt(name string, m map[string]string) (Function, error) {
	c, md, _ := strings.Cut(name, "-")
	p := newParams(name, m)
	f := Encrypt{Mode: ECB}
	f.Cipher, _ = cipherByName(c)
	if md == "cbc" {
		f.Mode = CBC
		iv, err := p.hex("iv")
		if err != nil {
			return nil, err
		}
		f.IV = iv
	}
	if err := p.done(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f Encrypt) profile(p *Profile) { p.setHex("iv", f.IV) }

// What the native strategy asks of Encrypt (native.go).

func (f Encrypt) nativeMechanisms() []uint { return []uint{encryptDataMechanism(f)} }

func (f Encrypt) nativeCalls([]byte) int { return 1 }

// encryptDataIV is the IV of f's *_ENCRYPT_DATA parameter when session's
// deriveKeyData can build it around the data on the C stack (nothing
// allocated): none for ECB, f.IV for CBC. validate checked the lengths, as
// mechanisms.Call would.
func (f Encrypt) encryptDataIV() (iv []byte, ok bool) {
	switch {
	case f.Mode == ECB:
		return nil, true
	case f.Cipher == AES && len(f.IV) == 16, f.Cipher != AES && len(f.IV) == 8:
		return f.IV, true
	}
	return nil, false
}

func (f Encrypt) nativeParams(data []byte) mechanisms.Params {
	switch {
	case f.Mode == ECB:
		return &mechanisms.KeyDerivationStringData{Data: data}
	case f.Cipher == AES:
		p := &mechanisms.AESCBCEncryptDataParams{Data: data}
		copy(p.IV[:], f.IV)
		return p
	}
	p := &mechanisms.DESCBCEncryptDataParams{Data: data}
	copy(p.IV[:], f.IV)
	return p
}

// encryptDataMechanism is the *_ENCRYPT_DATA mechanism computing f.
func encryptDataMechanism(f Encrypt) uint {
	switch {
	case f.Cipher == AES && f.Mode == ECB:
		return pkcs11.CKM_AES_ECB_ENCRYPT_DATA
	case f.Cipher == AES && f.Mode == CBC:
		return pkcs11.CKM_AES_CBC_ENCRYPT_DATA
	case f.Cipher == DES3 && f.Mode == ECB:
		return pkcs11.CKM_DES3_ECB_ENCRYPT_DATA
	case f.Cipher == DES3 && f.Mode == CBC:
		return pkcs11.CKM_DES3_CBC_ENCRYPT_DATA
	case f.Cipher == DES && f.Mode == ECB:
		return pkcs11.CKM_DES_ECB_ENCRYPT_DATA
	case f.Cipher == DES && f.Mode == CBC:
		return pkcs11.CKM_DES_CBC_ENCRYPT_DATA
	}
	return 0
}
