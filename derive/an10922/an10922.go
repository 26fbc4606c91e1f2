// Package an10922 derives diversified AES-128 keys of NXP application note
// AN10922 ("Symmetric key diversifications", its section "AES-128 key
// diversification" and worked example) inside a PKCS#11 token: the card key of one card from a
// master key K and the card's diversification input M (typically its UID
// || application ID || system identifier):
//
//	D  = 0x01 || M || padding
//	DK = CMAC(K, D)
//
// where M is 1 to 31 bytes and, when 0x01 || M is shorter than 32 bytes, D
// is padded to 32 bytes with 0x80 0x00 ... and the CMAC's last block is
// masked with the second CMAC subkey K2; otherwise D is
// 32 bytes and the first subkey K1 is used.
//
// # Which inputs a token computes exactly
//
// The token computes DK as the SP 800-108 counter-mode KDF with the
// AES-CMAC PRF, one block, layout "counter:8,data": PRF input 0x01 || M
// (one C_DeriveKey with CKM_SP800_108_COUNTER_KDF; NSS softoken runs it,
// SoftHSM2 2.6.1 does not). A token's CMAC pads the message to the next
// 16-byte boundary only. So when 0x01 || M is 17 to 32 bytes long — M of
// 16 to 31 bytes — the token's padding (to 32 bytes with K2; or none, with
// K1) is AN10922's and DK is exact. When M is 15 bytes or shorter, AN10922
// pads 0x01 || M to two blocks and masks the second with the subkey K2; a
// token's CMAC pads it to one block, and given the two padded blocks as
// whole blocks it masks with K1. K2 is derived from E_K(0), a secret, and
// no standard PKCS#11 mechanism applies it inside a token: [DiversifyAES128]
// refuses such inputs with an error matching scheme.ErrNotComputable
// rather than compute anything on the host. Lengthen M with more card data
// (the application note's own example input is 17 bytes) to use this
// package.
//
// AN10922's AES-192 diversification XORs halves of two CMAC outputs — an
// XOR of two secret values, which no standard mechanism performs in a
// token — and its 2TDEA and 3TDEA ones need a TDES-CMAC PRF that no lab
// token runs; this package does not offer them.
//
// The master key needs CKA_DERIVE. The diversified key gets
// derive.DefaultUsage unless Options.Usage says otherwise.
package an10922

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/internal/chain"
	"github.com/p11derive/p11derive/derive/scheme"
)

// Exact input lengths: M of MinExactInput to MaxInput bytes.
const (
	// MinExactInput is the shortest M whose diversification a token
	// computes exactly (0x01 || M longer than one block).
	MinExactInput = 16
	// MaxInput is the longest M AN10922 allows.
	MaxInput = 31
)

// Layout is the SP 800-108 layout that makes the PRF input 0x01 || M: the
// 8-bit counter (1 in the only iteration) is AN10922's diversification
// constant for AES-128.
func Layout() derive.Layout {
	l, err := derive.ParseLayout("counter:8,data")
	if err != nil {
		panic(err)
	}
	return l
}

// DiversifyAES128 derives the AES-128 diversified key of master (an AES-128
// key with CKA_DERIVE) for diversification input m (16 to 31 bytes; see
// the package doc for shorter inputs).
func DiversifyAES128(ctx context.Context, tok *derive.Token, master *derive.Key, m []byte, o scheme.Options) (*scheme.Result, error) {
	if len(m) == 0 || len(m) > MaxInput {
		return nil, scheme.Inputf("an10922", "m", "the diversification input is 1 to %d bytes, not %d", MaxInput, len(m))
	}
	if len(m) < MinExactInput {
		return nil, &scheme.RefusedError{Scheme: "an10922",
			Reason: fmt.Sprintf("a %d-byte diversification input is padded to two AES blocks and masked with the CMAC subkey K2 by AN10922, where a token's CMAC pads 0x01 || M to one block: no standard PKCS#11 mechanism computes that in the token (inputs of %d to %d bytes are exact)", len(m), MinExactInput, MaxInput)}
	}
	if master.Type != pkcs11.CKK_AES || (master.Len != 0 && master.Len != 16) { // 0: no length given, the token decides
		return nil, &derive.KeyError{Key: name(master), Reason: derive.ErrKeyType,
			Problem: "AN10922 AES-128 diversification needs an AES-128 master key"}
	}
	f := derive.SP800108{Mode: derive.SP800108Counter, PRF: derive.AESCMAC, Layout: Layout()}
	return chain.Run(ctx, tok, func(c *chain.Chain) error {
		_, err := c.Final(master, o.Request(f, m, derive.KeyAES128, derive.DefaultUsage))
		return err
	})
}

// Input is the diversification input M of AN10922's examples: the card's
// UID, the application ID and the system identifier, concatenated.
func Input(uid, aid, systemID []byte) []byte {
	return append(append(append([]byte{}, uid...), aid...), systemID...)
}

// name names k in errors: by its label (derive.Key.Name).
func name(k *derive.Key) string { return k.Name() }
