// Package tr31 derives the key block protection keys of ANSI X9.143-2021 /
// ASC X9 TR-31-2018 ("Interoperable Secure Key Block Specification")
// inside a PKCS#11 token: the key block encryption key KBEK and the key
// block authentication (MAC) key KBAK, from the key block protection key
// KBPK.
//
//   - Version D (AES key derivation binding, X9.143 §7.2.2, table 25):
//     KBEK and KBAK = the SP 800-108 counter-mode KDF with AES-CMAC as PRF
//     over counter (1 byte) || key usage ('0000' KBEK, '0001' KBAK) ||
//     '00' || algorithm ('0002' AES-128, '0003' AES-192, '0004' AES-256) ||
//     length in bits (2 bytes); as many blocks as the KBPK is long.
//   - Version B (TDES key derivation binding, X9.143 §7.2.1, table 24):
//     the same with TDES-CMAC as PRF, algorithm '0000' (2TDEA) or '0001'
//     (3TDEA).
//   - Versions A and C (TDES key variant binding of TR-31, withdrawn from
//     X9.143 but still met): KBEK = KBPK ⊕ '45 45 ...', KBAK = KBPK ⊕
//     '4D 4D ...'.
//
// The worked examples of TR-31-2018 Annex A (A.7.2.1 version A, A.7.2.2
// and A.7.3.2 version B, A.7.3.1 version C, A.7.4 version D) are this
// package's test vectors.
//
// # How the token computes them, and what it cannot
//
// Version D is one derive.SP800108 in counter mode with the AES-CMAC PRF
// and the layout "counter:8,hex:<usage>00<algorithm>,dkm:16": one
// C_DeriveKey with CKM_SP800_108_COUNTER_KDF (NSS softoken runs it;
// SoftHSM2 2.6.1 does not, and the derivation is refused there with an
// error matching derive.ErrUnsupported).
//
// Version B is the same C_DeriveKey with CKM_DES3_CMAC as the PRF (PKCS#11
// v3.0 allows it: derive.SP800108 with derive.DES3CMAC). Neither lab token
// runs it (NSS softoken answers CKR_MECHANISM_PARAM_INVALID,
// SoftHSM2 has no SP 800-108): on them it is refused with an error matching
// scheme.ErrNotComputable and derive.ErrUnsupported, leaving nothing
// behind. It is computed on tokens that run the mechanism, but was not
// verified on any. No other standard mechanism computes TDES-CMAC into a
// key: CMAC's subkey K1 is derived from E_K(0), a secret the token would
// have to XOR into the data.
//
// Versions A and C are one C_DeriveKey with CKM_XOR_BASE_AND_DATA
// (derive.XORData: the XOR of the key with public data, a standard
// mechanism; NSS softoken runs it, SoftHSM2 does not). No XOR of two secret values is needed by any version.
//
// The KBPK needs CKA_DERIVE. By default the KBEK can encrypt and decrypt
// and the KBAK can sign and verify (MAC), nothing more.
package tr31

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/ckm"
)

// Version is a key block version ID.
type Version byte

// The key block versions whose protection keys this package derives.
const (
	VersionA Version = 'A' // TDES key variant binding
	VersionB Version = 'B' // TDES key derivation binding (TDES-CMAC KDF)
	VersionC Version = 'C' // TDES key variant binding, as A
	VersionD Version = 'D' // AES key derivation binding (AES-CMAC KDF)
)

func (v Version) String() string { return "version " + string(v) }

// ParseVersion reads "A", "B", "C" or "D" (case-insensitive).
func ParseVersion(s string) (Version, error) {
	if len(s) == 1 {
		switch c := Version(strings.ToUpper(s)[0]); c {
		case VersionA, VersionB, VersionC, VersionD:
			return c, nil
		}
	}
	return 0, scheme.Inputf("tr31", "version", "unknown key block version %q (A, B, C or D)", s)
}

// Key names one of the two protection keys.
type Key uint8

// The key block protection keys.
const (
	KBEK Key = iota + 1 // key block encryption key
	KBAK                // key block authentication (MAC) key
)

func (k Key) String() string {
	switch k {
	case KBEK:
		return "kbek"
	case KBAK:
		return "kbak"
	}
	return fmt.Sprintf("key(%d)", uint8(k))
}

// DefaultUsage is the usage of a key derived without Options.Usage.
func (k Key) DefaultUsage() derive.Usage {
	if k == KBAK {
		return derive.UseSign | derive.UseVerify
	}
	return derive.UseEncrypt | derive.UseDecrypt
}

// variant is the byte the KBPK is XORed with in versions A and C.
func (k Key) variant() byte {
	if k == KBAK {
		return 0x4D
	}
	return 0x45
}

// usage is the key usage of the KDF's input (X9.143 tables 24 and 25).
func (k Key) usage() uint16 {
	if k == KBAK {
		return 0x0001
	}
	return 0x0000
}

// Layout is the SP 800-108 layout of versions B and D for key k and a KBPK
// whose algorithm indicator is alg: counter || usage || '00' || alg || L.
func Layout(k Key, alg uint16) derive.Layout {
	l, err := derive.ParseLayout(fmt.Sprintf("counter:8,hex:%04x00%04x,dkm:16", k.usage(), alg))
	if err != nil {
		panic(err)
	}
	return l
}

// Derive derives the protection key k of version v from the KBPK (an AES
// key for version D, a CKK_DES2 or CKK_DES3 key for A, B and C, with
// CKA_DERIVE). The derived key has the KBPK's type and length.
func Derive(ctx context.Context, tok *derive.Token, kbpk *derive.Key, v Version, k Key, o scheme.Options) (*scheme.Result, error) {
	if k != KBEK && k != KBAK {
		return nil, scheme.Inputf("tr31", "key", "unknown protection key %v (kbek, kbak)", k)
	}
	switch v {
	case VersionD:
		var alg uint16
		var kt derive.KeyType
		switch {
		case kbpk.Type == pkcs11.CKK_AES && kbpk.Len == 16:
			alg, kt = 0x0002, derive.KeyAES128
		case kbpk.Type == pkcs11.CKK_AES && kbpk.Len == 24:
			alg, kt = 0x0003, derive.KeyAES192
		case kbpk.Type == pkcs11.CKK_AES && kbpk.Len == 32:
			alg, kt = 0x0004, derive.KeyAES256
		case kbpk.Type == pkcs11.CKK_AES && kbpk.Len == 0:
			return nil, &derive.KeyError{Key: keyName(kbpk), Reason: derive.ErrKeyType,
				Problem: "the token does not give this CKK_AES KBPK's length (CKA_VALUE_LEN), which chooses the TR-31 version D algorithm and key length"}
		default:
			return nil, keyTypeErr(kbpk, v, "an AES key")
		}
		f := derive.SP800108{Mode: derive.SP800108Counter, PRF: derive.AESCMAC, Layout: Layout(k, alg)}
		return chain.Run(ctx, tok, func(c *chain.Chain) error {
			_, err := c.Final(kbpk, o.Request(f, nil, kt, k.DefaultUsage()))
			return err
		})
	case VersionA, VersionB, VersionC:
		var alg uint16
		var kt derive.KeyType
		switch kbpk.Type {
		case pkcs11.CKK_DES2:
			alg, kt = 0x0000, derive.KeyDES2
		case pkcs11.CKK_DES3:
			alg, kt = 0x0001, derive.KeyDES3
		default:
			return nil, keyTypeErr(kbpk, v, "a double- or triple-length DES key (CKK_DES2, CKK_DES3)")
		}
		var f derive.Function
		var data []byte
		if v == VersionB {
			f = derive.SP800108{Mode: derive.SP800108Counter, PRF: derive.DES3CMAC, Layout: Layout(k, alg)}
		} else {
			f = derive.XORData{}
			data = make([]byte, kt.Len())
			for i := range data {
				data[i] = k.variant()
			}
		}
		res, err := chain.Run(ctx, tok, func(c *chain.Chain) error {
			_, err := c.Final(kbpk, o.Request(f, data, kt, k.DefaultUsage()))
			return err
		})
		if err != nil && errors.Is(err, derive.ErrUnsupported) && !errors.Is(err, scheme.ErrNotComputable) {
			err = &scheme.RefusedError{Scheme: "tr31 " + v.String(), Reason: "the token refused " + f.Name(), Err: err}
		}
		return res, err
	}
	return nil, scheme.Inputf("tr31", "version", "unknown key block version %q (A, B, C or D)", string(v))
}

// Keys derives both protection keys, the KBEK with ko and the KBAK with
// ao. If the KBAK cannot be derived, the KBEK is destroyed.
func Keys(ctx context.Context, tok *derive.Token, kbpk *derive.Key, v Version, ko, ao scheme.Options) (kbek, kbak *scheme.Result, err error) {
	kbek, err = Derive(ctx, tok, kbpk, v, KBEK, ko)
	if err != nil {
		return nil, nil, err
	}
	kbak, err = Derive(ctx, tok, kbpk, v, KBAK, ao)
	if err != nil {
		tok.Destroy(context.WithoutCancel(ctx), kbek.Key)
		return nil, nil, err
	}
	return kbek, kbak, nil
}

// keyName names k in errors: by its label (derive.Key.Name).
func keyName(k *derive.Key) string { return k.Name() }

func keyTypeErr(k *derive.Key, v Version, want string) error {
	return &derive.KeyError{Key: keyName(k), Reason: derive.ErrKeyType,
		Problem: fmt.Sprintf("a TR-31 %v KBPK is %s, not a %s key of %d bytes", v, want, ckm.KeyType(k.Type), k.Len)}
}
