package derive

import (
	"context"

	"github.com/miekg/pkcs11"
)

// Strategy names how a token is made to compute a function. Every strategy
// that computes a [Function] yields the same key, bit for bit.
type Strategy string

// The strategies, each in the file named after it (native.go, unwrap.go,
// macunwrap.go, cmacunwrap.go, streamunwrap.go). Auto lets Derive choose
// the cheapest one that works.
const (
	Auto Strategy = ""
	// Native computes a function with the token's own derivation
	// mechanism: C_DeriveKey with CKM_*_ENCRYPT_DATA for Encrypt
	// (docs/design.md §3.1), the function's own mechanism for the
	// key-derivation functions. The base key needs CKA_DERIVE.
	Native Strategy = "native"
	// Unwrap computes Decrypt with one C_UnwrapKey (CKM_<cipher>_ECB, or
	// CKM_<cipher>_CBC with the IV). The base key needs CKA_UNWRAP.
	Unwrap Strategy = "unwrap"
	// MACUnwrap computes E with a full-block CBC-MAC (CKM_*_MAC_GENERAL)
	// and one C_UnwrapKey in ECB mode (docs/design.md §3.2). The base key
	// needs CKA_SIGN and CKA_UNWRAP.
	MACUnwrap Strategy = "mac-unwrap"
	// CMACUnwrap is MACUnwrap with CMAC (CKM_AES_CMAC, CKM_DES3_CMAC) for
	// tokens without a full-block CBC-MAC (docs/design.md §3.3). It also
	// needs CKA_ENCRYPT, to compute the CMAC subkey from L = E_K(0^n) —
	// which puts L, K's full check value, in host memory for the duration
	// of the derivation.
	CMACUnwrap Strategy = "cmac-unwrap"
	// StreamUnwrap computes E with C_UnwrapKey in a stream mode (docs/design.md
	// §3.4): decrypting the zero block in CTR mode from counter block x, or in
	// OFB or CFB-128 mode from IV x, gives E_K(x). One unwrap per block (ECB,
	// or CBC when the key needs one block); several blocks are joined in the
	// token with CKM_CONCATENATE_BASE_AND_KEY. AES only. The base key needs
	// CKA_UNWRAP.
	//
	// Few tokens let a key unwrap in a stream mode; none of p11derive's lab
	// tokens (SoftHSM2 2.6.1, NSS softoken 3.87) does, so this strategy is
	// tested only for its refusals and error paths there.
	StreamUnwrap Strategy = "stream-unwrap"
)

// A strategy computes functions inside the token. Strategies live in files
// named after them (native.go, ...), with their tests beside them.
type strategy interface {
	name() Strategy
	// computes reports whether the strategy can compute f at all.
	computes(f Function) bool
	// cost is the number of PKCS#11 calls run makes for r (reading DK back
	// not included).
	cost(r *Request) int
	// needs lists the mechanisms the token must run and the base key's
	// attributes that must be true for f.
	needs(f Function) (mechs []uint, attrs []uint)
	// flags are the CKF_ flags of the strategy's use of each mechanism of
	// needs (CKF_DERIVE, CKF_SIGN, CKF_UNWRAP, CKF_ENCRYPT).
	flags(f Function) []uint
	// check says why the strategy cannot run on this token with this base
	// key, or returns nil. It makes no call but C_GetMechanismList (once per
	// Token) and C_GetMechanismInfo (once per mechanism). Errors wrap
	// ErrMissingAttribute or ErrUnsupported; a mechanism not listed (or
	// listed without the flag of its use) is named before a missing
	// attribute.
	check(t *Token, base *Key, f Function) error
	// run makes DK for r with template tmpl and returns its handle. On
	// error it leaves no object behind.
	run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error)
}

// strategies lists every strategy; for equal costs, the earlier is tried
// first.
var strategies = []strategy{native{}, unwrap{}, macUnwrap{}, cmacUnwrap{}, streamUnwrap{}}

// applier is a strategy that computes its functions for some requests only.
type applier interface {
	applies(r *Request) error
}

func strategyByName(n Strategy) strategy {
	for _, s := range strategies {
		if s.name() == n {
			return s
		}
	}
	return nil
}

// Strategies lists every strategy p11derive knows.
func Strategies() []Strategy {
	out := make([]Strategy, len(strategies))
	for i, s := range strategies {
		out[i] = s.name()
	}
	return out
}
