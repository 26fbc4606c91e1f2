package derive

import (
	"fmt"

	"github.com/p11derive/p11derive/internal/ckm"
)

// Cipher is the block cipher of an encryption function.
type Cipher uint8

// The block ciphers p11derive can compute with.
const (
	AES  Cipher = iota + 1 // AES (FIPS 197), 16-byte blocks
	DES3                   // Triple DES (two- or three-key), 8-byte blocks
	DES                    // single DES, 8-byte blocks
)

// BlockSize is the cipher's block size in bytes (n in docs/design.md).
func (c Cipher) BlockSize() int {
	switch c {
	case AES:
		return 16
	case DES3, DES:
		return 8
	}
	return 0
}

func (c Cipher) String() string {
	switch c {
	case AES:
		return "aes"
	case DES3:
		return "des3"
	case DES:
		return "des"
	}
	return fmt.Sprintf("cipher(%d)", uint8(c))
}

// Mode is the chaining of an encryption function.
type Mode uint8

// The chaining modes of [Encrypt].
const (
	ECB Mode = iota + 1 // each block encrypted on its own
	CBC                 // cipher block chaining from an IV
)

func (m Mode) String() string {
	switch m {
	case ECB:
		return "ecb"
	case CBC:
		return "cbc"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// A Function names what DK is computed as, independently of how a token
// computes it. Two strategies that compute the same Function yield the same
// key, bit for bit.
//
// The functions are [Encrypt] (DK = E(data, K)), its inverse [Decrypt],
// and the key-derivation functions of docs/design.md §4.
type Function interface {
	// Name is the function's stable name, as used by the p11derive
	// command's --kdf flag and in profiles, such as "aes-cbc".
	Name() string
	// validate checks the function's parameters, the data and the output
	// key type, before any PKCS#11 call.
	validate(data []byte, out KeyType) error
	// checkBase says why the base key cannot be a key of this function
	// (wrapping ErrKeyType), or returns nil.
	checkBase(base *Key) error
	// profile records the function's parameters in p (see Profile).
	profile(p *Profile)
}

// cipherKeyError is checkBase's error for the block-cipher functions.
func cipherKeyError(name string, c Cipher, base *Key) error {
	return &KeyError{Key: base.name(), Reason: ErrKeyType,
		Problem: fmt.Sprintf("%s needs a %s key, the base key has type %s", name, c, ckm.KeyType(base.Type))}
}

// validateBlocks checks block-cipher parameters and data: a known cipher and
// mode, an IV of one block for CBC and none for ECB, whole blocks of data
// and enough of them for the output key.
func validateBlocks(c Cipher, m Mode, iv, data []byte, out KeyType) error {
	f := struct {
		Cipher Cipher
		Mode   Mode
		IV     []byte
	}{c, m, iv}
	n := f.Cipher.BlockSize()
	if n == 0 {
		return inputErr("cipher", "unknown cipher %v", f.Cipher)
	}
	switch f.Mode {
	case ECB:
		if len(f.IV) != 0 {
			return inputErr("iv", "ECB takes no IV, got %d bytes", len(f.IV))
		}
	case CBC:
		if len(f.IV) != n {
			return inputErr("iv", "%s-cbc needs a %d-byte IV, got %d bytes", f.Cipher, n, len(f.IV))
		}
	default:
		return inputErr("mode", "unknown mode %v", f.Mode)
	}
	if len(data) == 0 {
		return inputErr("data", "no derivation data")
	}
	if len(data)%n != 0 {
		return inputErr("data", "%d bytes is not a whole number of %d-byte %s blocks", len(data), n, f.Cipher)
	}
	if len(data) < out.Len() {
		return inputErr("data", "%d bytes of data cannot fill a %d-byte %s key", len(data), out.Len(), out)
	}
	return nil
}

// blocksFor is the number of cipher blocks a key of type kt takes.
func blocksFor(c Cipher, kt KeyType) int {
	n := c.BlockSize()
	return (kt.n + n - 1) / n
}

// cipherModeNames are the names of Encrypt's cipher-mode pairs ([0]) and
// Decrypt's ([1]), made once: a function's name is asked for on every
// derivation (Result, profiles, batch rows).
var cipherModeNames = func() (n [2][DES + 1][CBC + 1]string) {
	for _, c := range []Cipher{AES, DES3, DES} {
		for _, m := range []Mode{ECB, CBC} {
			n[0][c][m] = c.String() + "-" + m.String()
			n[1][c][m] = n[0][c][m] + "-decrypt"
		}
	}
	return n
}()

// cipherMode is "aes-ecb", "des3-cbc"..., with "-decrypt" when decrypt.
func cipherMode(c Cipher, m Mode, decrypt bool) string {
	d := 0
	if decrypt {
		d = 1
	}
	if c >= AES && c <= DES && m >= ECB && m <= CBC {
		return cipherModeNames[d][c][m]
	}
	if decrypt {
		return c.String() + "-" + m.String() + "-decrypt"
	}
	return c.String() + "-" + m.String()
}
