// Package gp derives GlobalPlatform keys inside a PKCS#11 token: a card's
// static keys from a master key and the card's KDD ([DiversifyKeys]: EMV
// CPS 1.1, VISA2, the SCP03 KDF; see div.go), and secure channel session
// keys from the card's static keys:
//
//   - SCP02 (GlobalPlatform Card Specification v2.2, Appendix E.4.1,
//     "DES Session Keys"): session key = 3DES-CBC, zero IV, of the
//     derivation data constant || sequence counter || twelve '00' bytes,
//     under the static key of the same purpose. The constants are
//     '0182' for S-ENC (from the static ENC key), '0101' for C-MAC and
//     '0102' for R-MAC (both from the static MAC key), and '0181' for
//     DEK (from the static DEK).
//   - SCP03 (GlobalPlatform Card Specification v2.2 Amendment D, §6.2.1
//     "AES Session Keys", with the KDF of §4.1.5): session key = the
//     SP 800-108 counter-mode KDF with AES-CMAC as PRF over
//     label (eleven '00' bytes || derivation constant) || '00' ||
//     L (2 bytes, the key length in bits) || i (1 byte) || context
//     (host challenge || card challenge). The constants are '04' for
//     S-ENC, '06' for S-MAC and '07' for S-RMAC. SCP03 defines no session
//     DEK: the static Key-DEK is used as it is (§6.2.1), so there is
//     nothing to derive, and asking for one is refused.
//
// # How the token computes them
//
// SCP02: one derive.Encrypt{DES3, CBC, IV 0} of 16 bytes into a CKK_DES2
// key: one C_DeriveKey with CKM_DES3_CBC_ENCRYPT_DATA (SoftHSM2, NSS
// softoken), or any other exact strategy of package derive.
//
// SCP03: one derive.SP800108 in counter mode with the AES-CMAC PRF and the
// layout "hex:<label>00,dkm:16,counter:8,data" (data = the context): one
// C_DeriveKey with CKM_SP800_108_COUNTER_KDF (PKCS#11 v3.0; NSS softoken
// runs it, SoftHSM2 2.6.1 does not, and the derivation is refused there
// with an error matching derive.ErrUnsupported). Session keys of static
// AES-192 and AES-256 keys take two PRF blocks (i = 1, 2), as Amendment D
// says.
//
// Static keys need CKA_DERIVE. Session keys get derive.DefaultUsage unless
// Options.Usage says otherwise.
package gp

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/ckm"
)

// SCP02Key is an SCP02 session key, named by its purpose.
type SCP02Key uint8

// The SCP02 session keys and their derivation constants (Appendix E.4.1).
const (
	SCP02SENC SCP02Key = iota + 1 // S-ENC, constant '0182', from the static ENC key
	SCP02CMAC                     // C-MAC, constant '0101', from the static MAC key
	SCP02RMAC                     // R-MAC, constant '0102', from the static MAC key
	SCP02DEK                      // DEK, constant '0181', from the static DEK
)

// Constant is the key's 2-byte derivation constant.
func (k SCP02Key) Constant() []byte {
	switch k {
	case SCP02SENC:
		return []byte{0x01, 0x82}
	case SCP02CMAC:
		return []byte{0x01, 0x01}
	case SCP02RMAC:
		return []byte{0x01, 0x02}
	case SCP02DEK:
		return []byte{0x01, 0x81}
	}
	return nil
}

func (k SCP02Key) String() string {
	switch k {
	case SCP02SENC:
		return "s-enc"
	case SCP02CMAC:
		return "c-mac"
	case SCP02RMAC:
		return "r-mac"
	case SCP02DEK:
		return "dek"
	}
	return fmt.Sprintf("scp02-key(%d)", uint8(k))
}

// SCP02SessionKey derives the SCP02 session key k from the static key of
// its purpose (a CKK_DES2 key with CKA_DERIVE) and the 2-byte sequence
// counter of the card's INITIALIZE UPDATE response. The session key is a
// CKK_DES2 key.
func SCP02SessionKey(ctx context.Context, tok *derive.Token, static *derive.Key, k SCP02Key, sequence []byte, o scheme.Options) (*scheme.Result, error) {
	c := k.Constant()
	if c == nil {
		return nil, scheme.Inputf("scp02", "key", "unknown session key %v (s-enc, c-mac, r-mac, dek)", k)
	}
	if len(sequence) != 2 {
		return nil, scheme.Inputf("scp02", "sequence", "the sequence counter is 2 bytes, not %d", len(sequence))
	}
	if static.Type != pkcs11.CKK_DES2 {
		return nil, &derive.KeyError{Key: name(static), Reason: derive.ErrKeyType,
			Problem: fmt.Sprintf("SCP02 static keys are double-length DES keys (CKK_DES2), not a %s key", ckm.KeyType(static.Type))}
	}
	data := make([]byte, 16)
	copy(data, c)
	copy(data[2:], sequence)
	f := derive.Encrypt{Cipher: derive.DES3, Mode: derive.CBC, IV: make([]byte, 8)}
	return chain.Run(ctx, tok, func(ch *chain.Chain) error {
		_, err := ch.Final(static, o.Request(f, data, derive.KeyDES2, derive.DefaultUsage))
		return err
	})
}

// SCP03Key is an SCP03 session key, named by its purpose.
type SCP03Key uint8

// The SCP03 session keys and their derivation constants (Amendment D,
// table 4-1). SCP03SDEK is not derived: see SCP03SessionKey.
const (
	SCP03SENC  SCP03Key = iota + 1 // S-ENC, constant '04', from the static ENC key
	SCP03SMAC                      // S-MAC, constant '06', from the static MAC key
	SCP03SRMAC                     // S-RMAC, constant '07', from the static MAC key
	SCP03SDEK                      // no session key: the static DEK is used as is
)

// Constant is the key's derivation constant, or -1 for SCP03SDEK (none)
// and unknown keys.
func (k SCP03Key) Constant() int {
	switch k {
	case SCP03SENC:
		return 0x04
	case SCP03SMAC:
		return 0x06
	case SCP03SRMAC:
		return 0x07
	}
	return -1
}

func (k SCP03Key) String() string {
	switch k {
	case SCP03SENC:
		return "s-enc"
	case SCP03SMAC:
		return "s-mac"
	case SCP03SRMAC:
		return "s-rmac"
	case SCP03SDEK:
		return "s-dek"
	}
	return fmt.Sprintf("scp03-key(%d)", uint8(k))
}

// SCP03Layout is the SP 800-108 layout of Amendment D §4.1.5 for a
// derivation constant: label || separation indicator || L || i, with the
// context as the request's data.
func SCP03Layout(constant byte) derive.Layout {
	l, err := derive.ParseLayout(fmt.Sprintf("hex:%s%02x00,dkm:16,counter:8,data", hex.EncodeToString(make([]byte, 11)), constant))
	if err != nil {
		panic(err) // constant layout
	}
	return l
}

// SCP03SessionKey derives the SCP03 session key k from the static key of
// its purpose (an AES key with CKA_DERIVE), the host challenge and the card
// challenge (8 bytes each, or 16 each in the S16 mode of Amendment D
// v1.1.2). The session key is an AES key of the static key's length.
//
// Asking for SCP03SDEK is refused with an error matching
// derive.ErrInvalidInput: SCP03 uses the static DEK itself.
func SCP03SessionKey(ctx context.Context, tok *derive.Token, static *derive.Key, k SCP03Key, hostChallenge, cardChallenge []byte, o scheme.Options) (*scheme.Result, error) {
	if k == SCP03SDEK {
		return nil, scheme.Inputf("scp03", "key", "SCP03 derives no session DEK: Amendment D §6.2.1 uses the static Key-DEK as it is")
	}
	c := k.Constant()
	if c < 0 {
		return nil, scheme.Inputf("scp03", "key", "unknown session key %v (s-enc, s-mac, s-rmac)", k)
	}
	if len(hostChallenge) != len(cardChallenge) || (len(hostChallenge) != 8 && len(hostChallenge) != 16) {
		return nil, scheme.Inputf("scp03", "challenge", "the host and card challenges are 8 bytes each (or 16 each in S16 mode), not %d and %d", len(hostChallenge), len(cardChallenge))
	}
	var kt derive.KeyType
	switch {
	case static.Type != pkcs11.CKK_AES:
		return nil, &derive.KeyError{Key: name(static), Reason: derive.ErrKeyType,
			Problem: fmt.Sprintf("SCP03 static keys are AES keys, not a %s key", ckm.KeyType(static.Type))}
	case static.Len == 0:
		return nil, &derive.KeyError{Key: name(static), Reason: derive.ErrKeyType,
			Problem: "the token does not give this CKK_AES static key's length (CKA_VALUE_LEN), which SCP03 needs for the session keys' length"}
	case !aesKeyType(static.Len, &kt):
		return nil, &derive.KeyError{Key: name(static), Reason: derive.ErrKeyType,
			Problem: fmt.Sprintf("the static key's length (%d bytes) is not an AES key length", static.Len)}
	}
	context := append(append([]byte{}, hostChallenge...), cardChallenge...)
	f := derive.SP800108{Mode: derive.SP800108Counter, PRF: derive.AESCMAC, Layout: SCP03Layout(byte(c))}
	return chain.Run(ctx, tok, func(ch *chain.Chain) error {
		_, err := ch.Final(static, o.Request(f, context, kt, derive.DefaultUsage))
		return err
	})
}

// name names k in errors: by its label (derive.Key.Name).
func name(k *derive.Key) string { return k.Name() }

// aesKeyType sets *kt to the type of an AES key of n bytes, and says
// whether n is an AES key length.
func aesKeyType(n int, kt *derive.KeyType) bool {
	switch n {
	case 16:
		*kt = derive.KeyAES128
	case 24:
		*kt = derive.KeyAES192
	case 32:
		*kt = derive.KeyAES256
	default:
		return false
	}
	return true
}
