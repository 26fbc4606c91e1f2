package gp

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/scheme"
)

// Card key diversification: a card's static keys (ENC, MAC, DEK) from an
// issuer's master key and the card's key diversification data (KDD, the
// 10 bytes of the INITIALIZE UPDATE response), as card-issuance tools such
// as GlobalPlatformPro compute them on the host — here inside the token:
//
//   - [MethodEMV], EMV CPS 1.1 (EMV Card Personalization Specification,
//     the diversification of the card's secure channel keys): key = DES3(KMC)[KDD[4..9] || 'F0' || k || KDD[4..9] ||
//     '0F' || k], k being '01' (ENC), '02' (MAC), '03' (DEK): one
//     derive.Encrypt{DES3, ECB} of 16 bytes into a CKK_DES2 key.
//   - [MethodVISA2], the VISA2 method: the same with KDD[0..1] ||
//     KDD[4..7] in place of KDD[4..9].
//   - [MethodKDF3], the SCP03 KDF of GlobalPlatformPro's "kdf3": the
//     SP 800-108 counter-mode KDF with AES-CMAC as PRF over
//     i (1 byte) || '00 00 00' || k || '00' || KDD, as many blocks as the
//     master key is long: one C_DeriveKey with CKM_SP800_108_COUNTER_KDF
//     (NSS softoken runs it; SoftHSM2 2.6.1 does not, and the
//     derivation is refused there with an error matching
//     derive.ErrUnsupported). The keys are AES keys of the master key's
//     length.
//
// The master key needs CKA_DERIVE (for the native strategies). The static
// keys get derive.UseDerive unless Options.Usage says otherwise: they
// derive SCP02/SCP03 session keys (SCP03 uses its static DEK as it is:
// give it encrypt,decrypt for that), and making them extractable
// (Options.Extractable) lets them be wrapped for a personalisation bureau.

// Method is a card key diversification method.
type Method uint8

// The diversification methods.
const (
	MethodEMV   Method = iota + 1 // EMV CPS 1.1, Triple DES
	MethodVISA2                   // VISA2, Triple DES
	MethodKDF3                    // SCP03 KDF (GlobalPlatformPro's kdf3), AES
)

func (m Method) String() string {
	switch m {
	case MethodEMV:
		return "emv"
	case MethodVISA2:
		return "visa2"
	case MethodKDF3:
		return "kdf3"
	}
	return fmt.Sprintf("method(%d)", uint8(m))
}

// MethodByName is the method named "emv", "visa2" or "kdf3".
func MethodByName(s string) (Method, bool) {
	for _, m := range []Method{MethodEMV, MethodVISA2, MethodKDF3} {
		if m.String() == s {
			return m, true
		}
	}
	return 0, false
}

// StaticKey is a card's static key, named by its purpose.
type StaticKey uint8

// The static keys; their values are the key type byte k of the
// diversification data.
const (
	StaticENC StaticKey = 1
	StaticMAC StaticKey = 2
	StaticDEK StaticKey = 3
)

// StaticKeys are the three static keys, in order.
var StaticKeys = []StaticKey{StaticENC, StaticMAC, StaticDEK}

func (k StaticKey) String() string {
	switch k {
	case StaticENC:
		return "enc"
	case StaticMAC:
		return "mac"
	case StaticDEK:
		return "dek"
	}
	return fmt.Sprintf("static-key(%d)", uint8(k))
}

// KDDLen is the length of the key diversification data.
const KDDLen = 10

// DiversificationData is the public data the method encrypts (emv,
// visa2: 16 bytes) or the SP 800-108 fixed input after the counter
// (kdf3: 15 bytes) for static key k and the card's KDD.
func DiversificationData(m Method, k StaticKey, kdd []byte) ([]byte, error) {
	if len(kdd) != KDDLen {
		return nil, scheme.Inputf("gp-div", "kdd", "the key diversification data is %d bytes, not %d", KDDLen, len(kdd))
	}
	if k != StaticENC && k != StaticMAC && k != StaticDEK {
		return nil, scheme.Inputf("gp-div", "key", "unknown static key %v (enc, mac, dek)", k)
	}
	var part []byte
	switch m {
	case MethodEMV:
		part = kdd[4:10]
	case MethodVISA2:
		part = append(append([]byte{}, kdd[0:2]...), kdd[4:8]...)
	case MethodKDF3:
		return append([]byte{0, 0, 0, byte(k), 0}, kdd...), nil
	default:
		return nil, scheme.Inputf("gp-div", "method", "unknown diversification method %v (emv, visa2, kdf3)", m)
	}
	data := make([]byte, 0, 16)
	data = append(append(data, part...), 0xF0, byte(k))
	data = append(append(data, part...), 0x0F, byte(k))
	return data, nil
}

// kdf3Layout is the PRF input of kdf3: the counter, then the fixed input.
func kdf3Layout() derive.Layout {
	l, err := derive.ParseLayout("counter:8,data")
	if err != nil {
		panic(err) // constant layout
	}
	return l
}

// DiversifyKey derives the static key k of the card whose KDD is kdd from
// the master key (emv, visa2: a CKK_DES2 or CKK_DES3 key; kdf3: an AES
// key), inside the token.
func DiversifyKey(ctx context.Context, tok *derive.Token, master *derive.Key, m Method, k StaticKey, kdd []byte, o scheme.Options) (*scheme.Result, error) {
	data, err := DiversificationData(m, k, kdd)
	if err != nil {
		return nil, err
	}
	var f derive.Function
	var kt derive.KeyType
	switch m {
	case MethodEMV, MethodVISA2:
		if master.Type != pkcs11.CKK_DES2 && master.Type != pkcs11.CKK_DES3 {
			return nil, &derive.KeyError{Key: name(master), Reason: derive.ErrKeyType,
				Problem: fmt.Sprintf("the %v method takes a Triple DES master key (CKK_DES2, CKK_DES3), not key type %#x", m, master.Type)}
		}
		f, kt = derive.Encrypt{Cipher: derive.DES3, Mode: derive.ECB}, derive.KeyDES2
	case MethodKDF3:
		switch {
		case master.Type != pkcs11.CKK_AES:
			return nil, &derive.KeyError{Key: name(master), Reason: derive.ErrKeyType,
				Problem: fmt.Sprintf("the kdf3 method takes an AES master key, not key type %#x", master.Type)}
		case !aesKeyType(master.Len, &kt):
			return nil, &derive.KeyError{Key: name(master), Reason: derive.ErrKeyType,
				Problem: fmt.Sprintf("the master key's length (%d bytes) is not an AES key length", master.Len)}
		}
		f = derive.SP800108{Mode: derive.SP800108Counter, PRF: derive.AESCMAC, Layout: kdf3Layout()}
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := c.Final(master, o.Request(f, data, kt, derive.UseDerive))
		return err
	})
}

// DiversifyKeys derives the three static keys (ENC, MAC, DEK, in that
// order) with the options of each. If one fails, those already made are
// destroyed: the card's key set is made whole or not at all.
func DiversifyKeys(ctx context.Context, tok *derive.Token, master *derive.Key, m Method, kdd []byte, o [3]scheme.Options) ([]*scheme.Result, error) {
	// All input checked before the first call.
	for _, k := range StaticKeys {
		if _, err := DiversificationData(m, k, kdd); err != nil {
			return nil, err
		}
	}
	var out []*scheme.Result
	for i, k := range StaticKeys {
		res, err := DiversifyKey(ctx, tok, master, m, k, kdd, o[i])
		if err != nil {
			for j, r := range out {
				if derr := tok.Destroy(context.WithoutCancel(ctx), r.Key); derr != nil {
					err = fmt.Errorf("%w (and the %v key made before could not be destroyed: %v)", err, StaticKeys[j], derr)
				}
			}
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}
