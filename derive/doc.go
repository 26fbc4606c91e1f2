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
// inside the token, to compare keys without seeing them.
//
// # Functions and strategies
//
// A [Function] names what DK is; a [Strategy] names how a token is made to
// compute it. Strategies that compute the same function give the same key,
// bit for bit, so Derive may choose among them: with Request.Strategy left
// at Auto it tries the cheapest one that the token lists and the base key's
// attributes allow, and remembers, per base key, the ones a token refused.
// The strategies are:
//
//   - native: one C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA and its CBC and
//     DES/DES3 siblings. The base key needs CKA_DERIVE.
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
