// Package dukpt derives the keys of AES DUKPT, ANSI X9.24-3-2017
// ("Retail Financial Services Symmetric Key Management Part 3: Derived
// Unique Key Per Transaction", §6), inside a PKCS#11 token:
//
//   - [InitialKey]: the initial key IK of a device from the base derivation
//     key BDK and the device's initial key ID (§6.3.1, key usage '8001').
//   - [TransactionKey]: the transaction key (the "derivation key" of a
//     transaction) for a KSN from the initial key, along the standard's
//     derivation path: one derivation per bit set in the transaction
//     counter, from the most significant (§6.1, §6.4; key usage '8000').
//   - [WorkingKey]: a working key — PIN encryption ('1000'), MAC generation
//     ('2000'), verification ('2001'), both ('2002'), data encryption
//     ('3000'), decryption ('3001'), both ('3002'), key encryption ('0002')
//     — of a given type from a transaction key (§6.3.3, §6.6).
//   - [DeriveWorkingKey]: what a receiving host does, BDK → IK →
//     transaction key → working key in one call.
//
// Every derivation is the standard's "derive key" function (§6.3.1): the
// AES-ECB encryption, under the derivation key, of 16-byte derivation data
// blocks (version '01' || block counter || key usage || algorithm ||
// length in bits || 8 bytes of IK ID or of derivation ID and transaction
// counter), one block per 128 bits of the derived key, with the block
// counter 1, 2. That is derive.Encrypt{AES, ECB} of one or two blocks:
// one C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA on SoftHSM2 and NSS
// softoken, or another exact strategy of package derive. AES DUKPT needs
// no other operation: no XOR of secret values (unlike TDES DUKPT of X9.24-1,
// whose key register arithmetic XORs key halves with each other and which
// this package does not offer: no standard PKCS#11 mechanism XORs two
// secret values inside a token).
//
// # Keys stay in the token
//
// Every intermediate key — the IK when deriving from the BDK, and each key
// along the derivation path — is a sensitive, non-extractable session
// object with CKA_DERIVE only, and is destroyed as soon as the next key is
// derived from it, and on every error path (cancellation and panics
// included). A scheme call leaves exactly one new object: the key it
// returns. Derivation keys are AES keys (the BDK, IK and transaction keys
// have the BDK's type: AES-128, AES-192 or AES-256) and need CKA_DERIVE.
//
// Default usages (when Options.Usage is zero): an initial key or a
// transaction key gets CKA_DERIVE only; a working key derive.DefaultUsage
// (encrypt, decrypt, sign, verify).
package dukpt

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/ckm"
)

// Lengths of AES DUKPT's identifiers (§6.2, §6.5).
const (
	IKIDLen = 8  // initial key ID: BDK ID (4 bytes) || derivation ID (4 bytes)
	KSNLen  = 12 // key serial number: initial key ID || transaction counter (4 bytes)
	// MaxCounterBits is the most bits a valid transaction counter has set.
	MaxCounterBits = 16
)

// KeyUsage is a key usage indicator of the derivation data (§6.3.2,
// tables 2 and 3).
type KeyUsage uint16

// The key usages of working keys, and of the derivation keys.
const (
	KeyEncryptionKey KeyUsage = 0x0002
	PINEncryption    KeyUsage = 0x1000
	MACGeneration    KeyUsage = 0x2000
	MACVerification  KeyUsage = 0x2001
	MACBoth          KeyUsage = 0x2002
	DataEncryption   KeyUsage = 0x3000 // data encryption, encrypt
	DataDecryption   KeyUsage = 0x3001 // data encryption, decrypt
	DataBoth         KeyUsage = 0x3002 // data encryption, both ways
	KeyDerivation    KeyUsage = 0x8000 // intermediate derivation keys (not a working key)
	InitialKeyUsage  KeyUsage = 0x8001 // the initial key (not a working key)
)

func (u KeyUsage) working() bool {
	switch u {
	case KeyEncryptionKey, PINEncryption, MACGeneration, MACVerification, MACBoth,
		DataEncryption, DataDecryption, DataBoth:
		return true
	}
	return false
}

// KeyType is the type of a derived key, as the derivation data names it
// (§6.2.2, algorithm indicator and length).
type KeyType uint8

// The key types of AES DUKPT.
const (
	TDES2   KeyType = iota + 1 // 2TDEA, algorithm '0000', 128 bits
	TDES3                      // 3TDEA, algorithm '0001', 192 bits
	AES128                     // algorithm '0002', 128 bits
	AES192                     // algorithm '0003', 192 bits
	AES256                     // algorithm '0004', 256 bits
	HMAC128                    // HMAC key, algorithm '0005', 128 bits
	HMAC192                    // HMAC key, algorithm '0005', 192 bits
	HMAC256                    // HMAC key, algorithm '0005', 256 bits
)

var keyTypes = map[KeyType]struct {
	name      string
	algorithm uint16
	bits      uint16
	kt        derive.KeyType
}{
	TDES2:   {"tdes2", 0, 128, derive.KeyDES2},
	TDES3:   {"tdes3", 1, 192, derive.KeyDES3},
	AES128:  {"aes128", 2, 128, derive.KeyAES128},
	AES192:  {"aes192", 3, 192, derive.KeyAES192},
	AES256:  {"aes256", 4, 256, derive.KeyAES256},
	HMAC128: {"hmac128", 5, 128, derive.KeyGeneric(16)},
	HMAC192: {"hmac192", 5, 192, derive.KeyGeneric(24)},
	HMAC256: {"hmac256", 5, 256, derive.KeyGeneric(32)},
}

func (k KeyType) String() string {
	if t, ok := keyTypes[k]; ok {
		return t.name
	}
	return fmt.Sprintf("keytype(%d)", uint8(k))
}

// KeyTypeByName returns the key type named "tdes2", "aes128", "hmac256"...
func KeyTypeByName(s string) (KeyType, bool) {
	for k, t := range keyTypes {
		if t.name == s {
			return k, true
		}
	}
	return 0, false
}

// DeriveKeyType is the PKCS#11 key type of a key of type k.
func (k KeyType) DeriveKeyType() derive.KeyType { return keyTypes[k].kt }

// derivationType is the DUKPT type of a derivation key (an AES key).
func derivationType(k *derive.Key) (KeyType, error) {
	if k.Type == pkcs11.CKK_AES {
		switch k.Len {
		case 16:
			return AES128, nil
		case 24:
			return AES192, nil
		case 32:
			return AES256, nil
		}
	}
	if k.Type == pkcs11.CKK_AES && k.Len == 0 {
		return 0, &derive.KeyError{Key: name(k), Reason: derive.ErrKeyType,
			Problem: "the token does not give this CKK_AES key's length (CKA_VALUE_LEN), which chooses the AES DUKPT key type (AES-128, AES-192 or AES-256) and so the derivation data"}
	}
	return 0, &derive.KeyError{Key: name(k), Reason: derive.ErrKeyType,
		Problem: fmt.Sprintf("AES DUKPT derivation keys (BDK, initial and transaction keys) are AES keys of 16, 24 or 32 bytes; this one is a %s key of %d bytes", ckm.KeyType(k.Type), k.Len)}
}

// DerivationData is the derivation data of §6.3.2 for a key of usage u and
// type k: one 16-byte block per 128 bits of the key, with block counters
// 1, 2. id is the 8-byte initial key ID (for InitialKeyUsage) or derivation
// ID || transaction counter (for the others).
func DerivationData(u KeyUsage, k KeyType, id []byte) []byte {
	t := keyTypes[k]
	n := (int(t.bits) + 127) / 128
	out := make([]byte, 0, 16*n)
	for i := 1; i <= n; i++ {
		out = append(out, 0x01, byte(i))
		out = binary.BigEndian.AppendUint16(out, uint16(u))
		out = binary.BigEndian.AppendUint16(out, t.algorithm)
		out = binary.BigEndian.AppendUint16(out, t.bits)
		out = append(out, id...)
	}
	return out
}

func request(u KeyUsage, k KeyType, id []byte, label string, o scheme.Options, usage derive.Usage) derive.Request {
	r := o.Request(derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}, DerivationData(u, k, id), keyTypes[k].kt, usage)
	r.Label = label
	return r
}

// intermediate is the request of a key along the path: derivation only, a
// session object labelled for what it is (so that an error deriving from
// it names it, not its handle); the strategy as the caller chose.
func intermediate(u KeyUsage, k KeyType, id []byte, o scheme.Options) derive.Request {
	label := "p11derive dukpt intermediate: initial key"
	if u != InitialKeyUsage {
		label = fmt.Sprintf("p11derive dukpt intermediate: key of counter %08X", binary.BigEndian.Uint32(id[4:]))
	}
	return derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}, Label: label,
		Data: DerivationData(u, k, id), KeyType: keyTypes[k].kt, Usage: derive.UseDerive, Strategy: o.Strategy}
}

// KSN is a key serial number: initial key ID || transaction counter.
type KSN [KSNLen]byte

// ParseKSN checks a 12-byte KSN: a transaction counter of 1 or more, with
// at most 16 bits set (X9.24-3 never uses other counter values).
func ParseKSN(b []byte) (KSN, error) {
	var k KSN
	if len(b) != KSNLen {
		return k, scheme.Inputf("dukpt", "ksn", "an AES DUKPT KSN is %d bytes (initial key ID || transaction counter), not %d", KSNLen, len(b))
	}
	copy(k[:], b)
	tc := k.Counter()
	if tc == 0 {
		return k, scheme.Inputf("dukpt", "ksn", "the transaction counter is 0: transactions use counters from 1")
	}
	if n := bits.OnesCount32(tc); n > MaxCounterBits {
		return k, scheme.Inputf("dukpt", "ksn", "transaction counter %#08x has %d bits set; a valid counter has at most %d", tc, n, MaxCounterBits)
	}
	return k, nil
}

// IKID is the KSN's initial key ID.
func (k KSN) IKID() []byte { return append([]byte{}, k[:IKIDLen]...) }

// Counter is the KSN's transaction counter.
func (k KSN) Counter() uint32 { return binary.BigEndian.Uint32(k[IKIDLen:]) }

// id is the derivation data's last 8 bytes for counter tc: the derivation
// ID (the initial key ID's right half) || tc.
func (k KSN) id(tc uint32) []byte {
	return binary.BigEndian.AppendUint32(append([]byte{}, k[4:8]...), tc)
}

// InitialKey derives a device's initial key from the BDK (an AES key with
// CKA_DERIVE) and its 8-byte initial key ID. The IK has the BDK's type
// and, by default, CKA_DERIVE only.
func InitialKey(ctx context.Context, tok *derive.Token, bdk *derive.Key, ikid []byte, o scheme.Options) (*scheme.Result, error) {
	if len(ikid) != IKIDLen {
		return nil, scheme.Inputf("dukpt", "ikid", "the initial key ID is %d bytes (BDK ID || derivation ID), not %d", IKIDLen, len(ikid))
	}
	dt, err := derivationType(bdk)
	if err != nil {
		return nil, err
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := c.Final(bdk, request(InitialKeyUsage, dt, ikid, o.Label, o, derive.UseDerive))
		return err
	})
}

// TransactionKey derives the transaction key of ksn from the device's
// initial key ik (an AES key with CKA_DERIVE), along the derivation path:
// one derivation per bit set in the transaction counter. Every key on the
// way is destroyed as soon as the next one exists. The transaction key has
// ik's type and, by default, CKA_DERIVE only.
func TransactionKey(ctx context.Context, tok *derive.Token, ik *derive.Key, ksn []byte, o scheme.Options) (*scheme.Result, error) {
	k, dt, err := inputs(ksn, ik)
	if err != nil {
		return nil, err
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := path(c, ik, dt, k, &o)
		return err
	})
}

// path derives the transaction key of k from the initial key ik. With o
// non-nil the transaction key is the chain's final key (with o's
// properties); with o nil it is an intermediate, destroyed when the chain
// ends. Each intermediate on the way is dropped once used.
func path(c *chain.Chain, ik *derive.Key, dt KeyType, k KSN, o *scheme.Options) (*derive.Key, error) {
	tc := k.Counter()
	key, working := ik, uint32(0)
	for mask := uint32(1) << 31; mask != 0; mask >>= 1 {
		if tc&mask == 0 {
			continue
		}
		working |= mask
		var next *derive.Key
		var err error
		if working == tc && o != nil {
			next, err = c.Final(key, request(KeyDerivation, dt, k.id(working), o.Label, *o, derive.UseDerive))
		} else {
			st := scheme.Options{}
			if o != nil {
				st.Strategy = o.Strategy
			}
			next, err = c.Step(key, intermediate(KeyDerivation, dt, k.id(working), st))
		}
		if err != nil {
			return nil, err
		}
		if key != ik {
			if err := c.Drop(key); err != nil {
				return nil, err
			}
		}
		key = next
	}
	return key, nil
}

// WorkingKey derives the working key of usage u and type kt for ksn from
// its transaction key (an AES key with CKA_DERIVE). A working key is no
// stronger than the transaction key (§6.1.3): AES and HMAC working keys
// are at most as long as it. The key's usage defaults to
// derive.DefaultUsage.
func WorkingKey(ctx context.Context, tok *derive.Token, txn *derive.Key, ksn []byte, u KeyUsage, kt KeyType, o scheme.Options) (*scheme.Result, error) {
	k, _, err := workingInputs(ksn, txn, u, kt)
	if err != nil {
		return nil, err
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := c.Final(txn, request(u, kt, k.id(k.Counter()), o.Label, o, derive.DefaultUsage))
		return err
	})
}

// DeriveWorkingKey is the receiving host's derivation: from the BDK (an AES
// key with CKA_DERIVE) and a transaction's KSN, the initial key, the
// transaction key, then the working key of usage u and type kt. Only the
// working key is left in the token; the others are destroyed on every
// path.
func DeriveWorkingKey(ctx context.Context, tok *derive.Token, bdk *derive.Key, ksn []byte, u KeyUsage, kt KeyType, o scheme.Options) (*scheme.Result, error) {
	k, dt, err := workingInputs(ksn, bdk, u, kt)
	if err != nil {
		return nil, err
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		ik, err := c.Step(bdk, intermediate(InitialKeyUsage, dt, k.IKID(), o))
		if err != nil {
			return err
		}
		txn, err := path(c, ik, dt, k, nil)
		if err != nil {
			return err
		}
		if err := c.Drop(ik); err != nil {
			return err
		}
		_, err = c.Final(txn, request(u, kt, k.id(k.Counter()), o.Label, o, derive.DefaultUsage))
		return err
	})
}

// WorkingKeyFromIK is the device's derivation from its stored initial key
// ik (an AES key with CKA_DERIVE) and a transaction's KSN: the transaction
// key along the derivation path, then the working key of usage u and type
// kt. Only the working key is left in the token: the transaction key and
// every key on the way are session objects with CKA_DERIVE only, destroyed
// on every path (success, error, cancellation, panic).
func WorkingKeyFromIK(ctx context.Context, tok *derive.Token, ik *derive.Key, ksn []byte, u KeyUsage, kt KeyType, o scheme.Options) (*scheme.Result, error) {
	k, dt, err := workingInputs(ksn, ik, u, kt)
	if err != nil {
		return nil, err
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		txn, err := path(c, ik, dt, k, nil)
		if err != nil {
			return err
		}
		_, err = c.Final(txn, request(u, kt, k.id(k.Counter()), o.Label, o, derive.DefaultUsage))
		return err
	})
}

// DeriveTransactionKey is BDK → initial key → transaction key in one
// call, leaving only the transaction key in the token.
func DeriveTransactionKey(ctx context.Context, tok *derive.Token, bdk *derive.Key, ksn []byte, o scheme.Options) (*scheme.Result, error) {
	k, dt, err := inputs(ksn, bdk)
	if err != nil {
		return nil, err
	}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		ik, err := c.Step(bdk, intermediate(InitialKeyUsage, dt, k.IKID(), o))
		if err != nil {
			return err
		}
		_, err = path(c, ik, dt, k, &o)
		return err
	})
}

// inputs parses a transaction's KSN and reads the derivation type of the
// key k it starts from.
func inputs(ksn []byte, k *derive.Key) (KSN, KeyType, error) {
	parsed, err := ParseKSN(ksn)
	if err != nil {
		return KSN{}, 0, err
	}
	dt, err := derivationType(k)
	if err != nil {
		return KSN{}, 0, err
	}
	return parsed, dt, nil
}

// workingInputs is inputs, and checks a working key of usage u and type
// kt may be derived from a key of that derivation type.
func workingInputs(ksn []byte, k *derive.Key, u KeyUsage, kt KeyType) (KSN, KeyType, error) {
	parsed, dt, err := inputs(ksn, k)
	if err != nil {
		return KSN{}, 0, err
	}
	if err := checkWorking(u, kt, dt); err != nil {
		return KSN{}, 0, err
	}
	return parsed, dt, nil
}

func checkWorking(u KeyUsage, kt KeyType, dt KeyType) error {
	if !u.working() {
		return scheme.Inputf("dukpt", "usage", "%#04x is not a working key usage (0002, 1000, 2000-2002, 3000-3002)", uint16(u))
	}
	t, ok := keyTypes[kt]
	if !ok {
		return scheme.Inputf("dukpt", "key-type", "unknown working key type %v", kt)
	}
	if t.algorithm >= 2 && t.bits > keyTypes[dt].bits {
		return scheme.Inputf("dukpt", "key-type", "a %v working key is stronger than the %v key it would be derived from (X9.24-3 §6.1.3)", kt, dt)
	}
	return nil
}

// name names k in errors: by its label (derive.Key.Name).
func name(k *derive.Key) string { return k.Name() }
