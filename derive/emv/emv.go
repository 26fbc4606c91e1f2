// Package emv derives the EMV card keys of EMV Book 2 (Integrated Circuit
// Card Specifications for Payment Systems, Book 2: Security and Key
// Management, v4.3, Annex A1) inside a PKCS#11 token:
//
//   - [ICCMasterKey]: the ICC master key MK from an issuer master key IMK
//     and the PAN and PAN sequence number: option A (A1.4.1) and option B
//     (A1.4.2, for PANs of more than 16 digits) for Triple DES issuer
//     master keys, option C (A1.4.3) for AES-128, AES-192 and AES-256 ones.
//   - [SessionKey]: the common session key SK from an ICC master key and a
//     diversification value R such as the ATC (A1.3.1, "Common Session Key
//     Derivation Option"), for Triple DES and AES-128/192/256 master keys.
//
// # How the token computes them
//
// Option A is one encryption: with Y the 8-byte block of the PAN and PSN,
// MK = DES3(IMK)[Y] || DES3(IMK)[Y ⊕ 'FF..FF'], "with the exception of the
// least significant bit of each byte ... set to ... odd parity". That is
// derive.Encrypt{DES3, ECB} of the 16 bytes Y || ~Y into a CKK_DES2 key.
// The parity bits are left to the token, as for any DES key it makes: they
// take no part in the cipher, so the token's key is Book 2's MK up to
// parity — the same DES key, with the same check value.
// Option B hashes the PAN and PSN with SHA-1 and decimalises the digest:
// both steps work on public data, on the host; the key step is option A's.
//
// Option C (AES) works on the 16-byte block Y of PAN || PSN left-padded
// with zeros: for a k-byte IMK, MK = AES(IMK)[Y] when k = 16, else the
// leftmost k bytes of AES(IMK)[Y] || AES(IMK)[Y ⊕ 'FF..FF']. That is one
// derive.Encrypt{AES, ECB} of Y (or of the 32 bytes Y || ~Y) into an AES
// key of the IMK's length: the token keeps the leftmost k bytes.
//
// The Triple DES session key is SK = DES3(MK)[R with byte 3 set to 'F0']
// || DES3(MK)[R with byte 3 set to '0F'] (R is 8 bytes): one
// derive.Encrypt{DES3, ECB} of 16 bytes into a CKK_DES2 key. The AES
// session key (R is 16 bytes, the block size n) of a k-byte master key is,
// by A1.3.1's rule for k = n and k > n: SK = AES(MK)[R] for AES-128, and
// for AES-192 and AES-256 the leftmost k bytes of AES(MK)[F1] ||
// AES(MK)[F2], F1 and F2 being R with byte 3 set to 'F0' and '0F' — one
// derive.Encrypt{AES, ECB} of 32 bytes into an AES key of MK's length.
//
// No published vector of option C or of the AES-192/256 session keys was
// found (pyemv, the source of this package's Triple DES vectors, has no AES
// derivations); the tests check them against a software reference written
// from the text above, on FIPS-197 AES.
//
// Every derivation is one C_DeriveKey with CKM_DES3_ECB_ENCRYPT_DATA or
// CKM_AES_ECB_ENCRYPT_DATA on tokens that have them (SoftHSM2 and NSS
// softoken both do), or any other exact strategy of package derive; the
// base key needs the attributes of the strategy (CKA_DERIVE for the
// native one). A master key derived here gets only
// CKA_DERIVE unless Options.Usage says otherwise (it derives session keys,
// and a key that can encrypt would let the host compute them).
package emv

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/ckm"
)

// Option is an ICC master key derivation method of EMV Book 2 A1.4.
type Option uint8

// The master key derivation options.
const (
	// OptionA (A1.4.1): Y is the 16 rightmost digits of PAN || PSN.
	OptionA Option = iota + 1
	// OptionB (A1.4.2): for PANs of more than 16 digits, Y is 16 digits
	// decimalised from SHA-1(PAN || PSN); for PANs of 16 digits or fewer
	// it is option A.
	OptionB
	// OptionC (A1.4.3), for AES issuer master keys: Y is the 16-byte block
	// of PAN || PSN left-padded with zeros.
	OptionC
)

func (o Option) String() string {
	switch o {
	case OptionA:
		return "A"
	case OptionB:
		return "B"
	case OptionC:
		return "C"
	}
	return fmt.Sprintf("option(%d)", uint8(o))
}

// DefaultMasterKeyUsage is the usage of an ICC master key derived without
// Options.Usage: it derives session keys and does nothing else.
const DefaultMasterKeyUsage = derive.UseDerive

// ICCMasterKey derives the ICC master key MK from the issuer master key
// imk for the application PAN (12 to 19 decimal digits) and PAN sequence
// number psn (two decimal digits; "" means "00", as Book 2 says for an
// absent PSN). Options A and B take a DES2 or DES3 imk and make a 16-byte
// (CKK_DES2) MK; option C takes an AES imk and makes an AES MK of the same
// length. imk needs CKA_DERIVE (for the native strategy).
func ICCMasterKey(ctx context.Context, tok *derive.Token, imk *derive.Key, opt Option, pan, psn string, o scheme.Options) (*scheme.Result, error) {
	y, err := MasterKeyBlock(opt, pan, psn)
	if err != nil {
		return nil, err
	}
	var f derive.Function
	var kt derive.KeyType
	var data []byte
	if opt == OptionC {
		if kt, err = aesType(imk, "issuer master key", "option C"); err != nil {
			return nil, err
		}
		data = y
		if kt.Len() > 16 {
			data = append(append([]byte{}, y...), complement(y)...)
		}
		f = derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}
	} else {
		if err := checkDES3(imk, "issuer master key"); err != nil {
			return nil, err
		}
		data = append(append([]byte{}, y...), complement(y)...)
		f, kt = derive.Encrypt{Cipher: derive.DES3, Mode: derive.ECB}, derive.KeyDES2
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := c.Final(imk, o.Request(f, data, kt, DefaultMasterKeyUsage))
		return err
	})
}

func complement(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = ^c
	}
	return out
}

// aesType is the AES key type of k, or a KeyError naming k by label.
func aesType(k *derive.Key, what, use string) (derive.KeyType, error) {
	if k.Type == pkcs11.CKK_AES {
		switch k.Len {
		case 16:
			return derive.KeyAES128, nil
		case 24:
			return derive.KeyAES192, nil
		case 32:
			return derive.KeyAES256, nil
		}
	}
	return derive.KeyType{}, &derive.KeyError{Key: name(k), Reason: derive.ErrKeyType,
		Problem: fmt.Sprintf("%s takes an AES-128, AES-192 or AES-256 %s, not a %d-byte %s key", use, what, k.Len, ckm.KeyType(k.Type))}
}

// MasterKeyBlock is the block Y of option A or B (8 bytes) or C (16
// bytes) for the PAN and PSN: public data, computed on the host. Option
// B's SHA-1 and decimalisation (A1.4.2) work on the PAN and PSN only.
func MasterKeyBlock(opt Option, pan, psn string) ([]byte, error) {
	if err := digits("pan", pan, 12, 19); err != nil {
		return nil, err
	}
	if psn == "" {
		psn = "00"
	}
	if err := digits("psn", psn, 2, 2); err != nil {
		return nil, err
	}
	switch opt {
	case OptionA:
	case OptionB:
		if len(pan) > 16 {
			return optionB(pan, psn), nil
		}
	case OptionC:
		// At most 21 digits: always padded, never cut.
		y, _ := hex.DecodeString(strings.Repeat("0", 32-len(pan+psn)) + pan + psn)
		return y, nil
	default:
		return nil, scheme.Inputf("emv", "option", "unknown master key derivation option %v (A, B or C)", opt)
	}
	x := pan + psn
	if len(x) > 16 {
		x = x[len(x)-16:]
	}
	x = strings.Repeat("0", 16-len(x)) + x
	y, _ := hex.DecodeString(x)
	return y, nil
}

// optionB is Y of A1.4.2: X = PAN || PSN, left-padded with one '0' to an
// even number of digits, packed; the digits of SHA-1(X) in order, then
// (if fewer than 16) its letters decimalised a..f → 0..5, in order; Y is
// the first 16.
func optionB(pan, psn string) []byte {
	x := pan + psn
	if len(x)%2 == 1 {
		x = "0" + x
	}
	packed, _ := hex.DecodeString(x)
	sum := sha1.Sum(packed)
	h := hex.EncodeToString(sum[:])
	var y []byte
	for _, c := range h {
		if c >= '0' && c <= '9' && len(y) < 16 {
			y = append(y, byte(c))
		}
	}
	for _, c := range h {
		if c >= 'a' && c <= 'f' && len(y) < 16 {
			y = append(y, byte(c-'a'+'0'))
		}
	}
	out, _ := hex.DecodeString(string(y))
	return out
}

func digits(field, s string, min, max int) error {
	if len(s) < min || len(s) > max {
		if min == max {
			return scheme.Inputf("emv", field, "%d digits, not %d", min, len(s))
		}
		return scheme.Inputf("emv", field, "%d to %d digits, not %d", min, max, len(s))
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return scheme.Inputf("emv", field, "%q is not decimal digits", s)
		}
	}
	return nil
}

func checkDES3(k *derive.Key, what string) error {
	if k.Type != pkcs11.CKK_DES2 && k.Type != pkcs11.CKK_DES3 {
		return &derive.KeyError{Key: name(k), Reason: derive.ErrKeyType,
			Problem: fmt.Sprintf("the %s must be a double- or triple-length DES key (CKK_DES2, CKK_DES3), not a %s key", what, ckm.KeyType(k.Type))}
	}
	return nil
}

// name names k in errors: by its label (derive.Key.Name).
func name(k *derive.Key) string { return k.Name() }

// SessionKey derives the common session key SK of Book 2 A1.3.1 from the
// ICC master key mk and the diversification value r:
//
//   - mk a Triple DES key (CKK_DES2): r is 8 bytes, SK a CKK_DES2 key,
//     DES3(MK)[r with r[2] = 'F0'] || DES3(MK)[r with r[2] = '0F'];
//   - mk an AES-128 key: r is 16 bytes, SK = AES(MK)[r], an AES-128 key;
//   - mk an AES-192 or AES-256 key: r is 16 bytes, SK the leftmost k bytes
//     of AES(MK)[r with r[2] = 'F0'] || AES(MK)[r with r[2] = '0F'], an
//     AES key of MK's length.
//
// For an application cryptogram session key r is the ATC followed by
// zeros (see ATC); other uses take the ARQC or ATC || '00 00' || UN.
// The session key's usage defaults to derive.DefaultUsage.
func SessionKey(ctx context.Context, tok *derive.Token, mk *derive.Key, r []byte, o scheme.Options) (*scheme.Result, error) {
	var f derive.Function
	var data []byte
	var kt derive.KeyType
	switch mk.Type {
	case pkcs11.CKK_DES2, pkcs11.CKK_DES3:
		if len(r) != 8 {
			return nil, scheme.Inputf("emv", "r", "a Triple DES master key takes an 8-byte diversification value, not %d bytes", len(r))
		}
		if mk.Type == pkcs11.CKK_DES3 {
			return nil, &derive.KeyError{Key: name(mk), Reason: derive.ErrKeyType,
				Problem: "an EMV Triple DES ICC master key is double length (CKK_DES2), its session key too; a triple-length master key is not defined by Book 2 A1.3.1"}
		}
		data = make([]byte, 16)
		copy(data, r)
		copy(data[8:], r)
		data[2], data[10] = 0xF0, 0x0F
		f, kt = derive.Encrypt{Cipher: derive.DES3, Mode: derive.ECB}, derive.KeyDES2
	case pkcs11.CKK_AES:
		if len(r) != 16 {
			return nil, scheme.Inputf("emv", "r", "an AES master key takes a 16-byte diversification value, not %d bytes", len(r))
		}
		var err error
		if kt, err = aesType(mk, "ICC master key", "an AES session key"); err != nil {
			return nil, err
		}
		data = append([]byte{}, r...)
		if kt.Len() > 16 {
			data = append(data, r...)
			data[2], data[18] = 0xF0, 0x0F
		}
		f = derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}
	default:
		return nil, &derive.KeyError{Key: name(mk), Reason: derive.ErrKeyType,
			Problem: fmt.Sprintf("the ICC master key must be a CKK_DES2 or AES key, not a %s key", ckm.KeyType(mk.Type))}
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := c.Final(mk, o.Request(f, data, kt, derive.DefaultUsage))
		return err
	})
}

// ATC is the diversification value R of an application cryptogram session
// key: the 2-byte application transaction counter followed by zeros, n
// bytes in all (8 for Triple DES, 16 for AES).
func ATC(atc uint16, n int) []byte {
	r := make([]byte, n)
	r[0], r[1] = byte(atc>>8), byte(atc)
	return r
}
