// Package derive computes a derived key DK = E(data, K) inside a PKCS#11
// token, from a base key K that never leaves it, and leaves DK in the token
// as a key object. DK never exists on the host.
//
// Three calls do the job:
//
//	tok, err := derive.Open(derive.Config{Module: "/usr/lib/softhsm/libsofthsm2.so", Label: "payments", PIN: pin})
//	k, err := tok.FindKey(ctx, "issuer-master-key")
//	res, err := tok.Derive(ctx, k, derive.Request{
//		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
//		Data:     data,
//		KeyType:  derive.KeyAES128,
//	})
//
// res.Key is DK (its handle and the attributes the token gave it),
// res.Strategy says how the token computed it and res.Calls how many
// PKCS#11 calls that took. [Token.CheckValue] computes a key's check value
// inside the token, to compare keys without seeing them. The examples
// (ExampleOpen and the others; go doc -http, or go test -run Example -v)
// make these calls against a throwaway SoftHSM2 token.
//
// # Which function do I want?
//
// A [Function] names what DK is. Pick the one your standard, or the other
// side of your protocol, computes:
//
//   - DK = E(data, K), the block cipher in ECB or CBC mode, leading bytes:
//     [Encrypt] (AES, DES3, DES). This is "encrypt the diversification data
//     under the master key" — EMV, DUKPT initial keys, SCP02, most
//     per-device key schemes.
//   - DK = D(data, K), the inverse: [Decrypt]. Different keys from
//     Encrypt; what almost any token that can unwrap computes.
//   - NIST SP 800-108 in counter or feedback mode with an HMAC or CMAC PRF
//     and a caller-defined PRF input: [SP800108] (with [ParseLayout]); the
//     SCP03, AN10922 and TR-31 version D KDFs are such layouts.
//   - RFC 5869: [HKDF].
//   - The legacy hash KDF SHA-256(K ‖ data): [SHA256Concat].
//   - K ⊕ data, key variants (TR-31 versions A and C): [XORData].
//
// A published scheme is already written: use its package rather than a
// Function — derive/emv (EMV card master and session keys), derive/gp
// (GlobalPlatform SCP02, SCP03, card key diversification), derive/an10922
// (NXP AES-128 diversification), derive/dukpt (AES DUKPT), derive/tr31
// (TR-31 key block keys). Programs that hold crypto11 keys use derive/c11.
// [ParseFunction] and [FunctionNames] give the functions by the names of
// the p11derive command's --kdf flag.
//
// # Strategies
//
// A [Strategy] names how a token is made to compute a function. Strategies
// that compute the same function give the same key, bit for bit, so Derive
// may choose among them: with Request.Strategy left at Auto it tries the
// cheapest one that the token lists and the base key's attributes allow,
// then the ones the token does not list, and remembers, per base key, the
// ones a token refused. Calls exclude the read-back of DK's attributes
// (one more); k is the number of cipher blocks DK takes.
//
//   - [Native]: the token's own derivation mechanism in one C_DeriveKey —
//     CKM_AES_ECB_ENCRYPT_DATA and its CBC and DES/DES3 siblings for
//     Encrypt, CKM_SP800_108_*_KDF, CKM_HKDF_DERIVE,
//     CKM_CONCATENATE_BASE_AND_DATA + CKM_SHA256_KEY_DERIVATION (3 calls)
//     and CKM_XOR_BASE_AND_DATA for the others. 1 call; the base key
//     needs CKA_DERIVE.
//   - [MACUnwrap]: Encrypt on tokens without *_ENCRYPT_DATA. A full-block
//     CBC-MAC (CKM_*_MAC_GENERAL) of each block's chain followed by a zero
//     block is E_K(c_i), DK encrypted under K; one C_UnwrapKey in ECB mode
//     lands DK. 2k+1 calls; CKA_SIGN and CKA_UNWRAP. Give such a key a
//     CKA_UNWRAP_TEMPLATE forcing CKA_SENSITIVE and not CKA_EXTRACTABLE
//     (see SECURITY.md).
//   - [CMACUnwrap]: the same with CMAC (CKM_AES_CMAC, CKM_DES3_CMAC),
//     appending the subkey K1 instead of the zero block. 2k+3 calls;
//     CKA_SIGN, CKA_UNWRAP and CKA_ENCRYPT (for L = E_K(0), which is in
//     host memory during the derivation).
//   - [StreamUnwrap]: Encrypt (AES) by C_UnwrapKey of the zero block in
//     CTR, OFB or CFB-128 mode, which is E_K(x); blocks joined in the token
//     with CKM_CONCATENATE_BASE_AND_KEY. 4k−3 calls; CKA_UNWRAP. Few tokens
//     allow it.
//   - [Unwrap]: Decrypt, one C_UnwrapKey in ECB or CBC mode. 1 call;
//     CKA_UNWRAP.
//
// Only strategies that compute exactly the requested function run. To let
// Derive fall back to a different function when the token cannot compute
// the one asked for, name the acceptable ones in Request.Allow, and keep
// the result's [Profile] to derive the same keys again later.
//
// The mathematics of each strategy and function, the invariants and how
// the tests prove exactness are in docs/design.md of the repository.
//
// # Which method do I want?
//
//   - Reach a token: [Open] with a [Config] (module, token by URI, label,
//     serial or slot, PIN); a nil Config.Logger keeps it silent.
//   - Find a base key: [Token.FindKey] by label, [Token.Find] or
//     [Token.Keys] by label and/or CKA_ID.
//   - Derive: [Token.Derive]; before deriving, [Token.Plan] says what each
//     strategy needs and whether this token and key have it. On several
//     tokens holding the same base key: [NewGroup], [Group.Derive].
//   - Compare keys without seeing them: [Token.CheckValue],
//     [Token.CheckValueBy] (ECB or CMAC convention).
//   - Make keys: [Token.Generate] (base keys), [Token.Import] (keys of
//     known value, for tests and known-answer checks), [Token.Unwrap];
//     export DK wrapped: [Token.Wrap], or [Token.DeriveAndWrap] (derive,
//     check value, wrap and destroy in one session: DK never outlives the
//     call); remove one: [Token.Destroy].
//   - What can this token do, verified? Package probe.
//
// # Several tokens: Group
//
// Two HSMs, or more, holding the same base key work as one through a
// [Group] ([NewGroup] with a [GroupConfig]: the open Tokens and the key's
// [Selector]). NewGroup finds the key on every member and proves it is the
// same by its check value, computed in each token; a member whose key
// differs is a [*MismatchError] naming both tokens. [Group.Derive] sends
// each request to the member with the fewest derivations in flight. A
// member fault — CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_DEVICE_MEMORY,
// CKR_TOKEN_NOT_PRESENT, CKR_SESSION_CLOSED, CKR_SESSION_HANDLE_INVALID
// and the like, not a refusal of the request — takes the member out, and
// the request is derived again, once, on another member; a health check
// (its session state, the base key found again and its check value
// matching) brings it back, RetryAfter (5 s by default) after the fault,
// started by the first Derive due. With no member up, the error matches
// [ErrNoMember]. The result's Member is the token that holds DK; a caller
// whose next call on DK there fails reports it with [Group.Failed], and
// may derive again. A Group derives session keys only: a Request with
// Persistent is refused before any call, since a token object on one
// member alone, or made twice by a retry, is what a group must not make.
//
// # Safety
//
// DK is CKA_SENSITIVE, not extractable and a session object unless the
// request says otherwise; Derive reads DK's attributes back and destroys a
// key the token made weaker than requested. Some tokens ignore
// CKA_SENSITIVE and CKA_EXTRACTABLE in a template (the key comes back
// readable and extractable): such a key — weaker in those two attributes
// only — is tightened with one C_SetAttributeValue (PKCS#11 lets both only
// be tightened), read back again and accepted if it now meets the request;
// the Result's warning names what the token ignored, and its
// CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE stay false.
// Request.StrictAttributes (KeySpec.StrictAttributes for Import, Unwrap and
// Generate) refuses such a key instead. Every [WeakKeyError] names the
// strategy, the call and the mechanism that made the key. p11derive never
// reads CKA_VALUE of any key and never modifies the base key. Bad input is
// refused before any PKCS#11 call, and no object is left behind on any
// error path: a key the token will not destroy is reported in the same
// error ([LeftBehindError]).
//
// Errors wrap the sentinels of this package ([ErrInvalidInput],
// [ErrKeyType], [ErrMissingAttribute], [ErrUnsupported], [ErrWeakKey],
// [ErrToken], ...) and, for failed calls, the token's CKR code as a
// pkcs11.Error. They never contain a PIN or key material.
package derive
