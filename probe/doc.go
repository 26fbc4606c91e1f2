// Package probe tells what a PKCS#11 token can derive inside itself: not
// what C_GetMechanismList claims, but what runs and gives the right bits.
//
//	tok, err := derive.Open(derive.Config{Module: module, Slot: &slot})
//	rep, err := probe.Run(ctx, tok, probe.Options{})
//	rep.WriteText(os.Stdout) // or WriteJSON, WriteMarkdown
//
// The report has the token's identity (CK_TOKEN_INFO, and the module's
// CK_INFO with its PKCS#11 version); the mechanisms that matter to
// derivation (the *_ENCRYPT_DATA family, *_MAC_GENERAL and CMAC, the block
// cipher modes, SP 800-108, HKDF, CONCATENATE_*, *_KEY_DERIVATION, AES key
// wrap, key generation) with their C_GetMechanismInfo flags and key sizes;
// and a result for every function p11derive knows (derive.FunctionNames,
// some in several variants: SP 800-108 with each PRF, HKDF with each hash)
// and every strategy that computes it (derive.Token.Plan).
//
// # How results are obtained
//
// Each strategy is run Options.Runs times (3 by default) with a base key of
// the probe's own, into an AES-128 DK (so that its check value can be
// computed in the token, whatever the function); the median time of one
// derivation and its PKCS#11 calls (derive.Result.Calls) are reported.
// CBC functions use a fixed IV, the key-derivation functions fixed
// parameters (the JSON gives them).
//
// DK is checked as docs/design.md §7 says. If the token accepts C_CreateObject
// of a secret key, the probe imports session keys of known value (AES-128,
// three-key Triple DES, DES, a 32-byte generic secret for the HMAC-based
// functions), and compares DK's check value, computed in the token
// (derive.Token.CheckValue), with that of the software reference
// (internal/ref, anchored to published vectors): known-answer. Otherwise
// (or with Options.NoImport) it generates the base keys in the token and
// compares the check values of the strategies that compute the same
// function: cross-check. Every run is checked, not only the first.
//
// Everything the probe makes is a session object, destroyed before Run
// returns, on every path; it never modifies an object it did not make, and
// never logs in by itself (derive.Open does, if given a PIN). Session
// objects need no read-write session: open the token with
// derive.Config{ReadOnly: true}, as p11derive probe does. With
// Options.ListOnly it makes nothing at all.
//
// # Statuses
//
// Each result has one status:
//
//   - verified: the strategy ran without error on every run and DK was
//     right: its check value equals the reference's (verified_by
//     known-answer), or, with a generated base key, equals that of every
//     other strategy that ran for the same function, at least two
//     (verified_by cross-check).
//   - ran: it ran without error, but DK could not be checked: a generated
//     base key and no other strategy to compare with, no reference for the
//     function, or a DK whose check value the token would not compute.
//     verified_by is none.
//   - listed: the token lists every mechanism the strategy needs, but the
//     probe did not run it (Options.ListOnly, or no base key of the type
//     the function needs could be made: reason says why).
//   - failed: it ran and the token failed a call although it lists every
//     mechanism the strategy needs (a listed-but-failing token; ckr and
//     call say which), or failed a later run after an earlier one worked;
//     or it returned a key, but the wrong one: reason starts with "wrong
//     result" (a check value other than the reference's, runs that
//     disagree, or, cross-checking, strategies that disagree — then every
//     one of them fails, since the probe cannot tell which is right and a
//     majority can share a fault); or a key weaker than requested. A
//     wrong key is never verified.
//   - unavailable: the token does not list a mechanism the strategy needs
//     (with the CKF_ flag of the strategy's use of it) and refused it at
//     call time (ckr and call say how), or the strategy cannot compute this
//     request at all (reason says why, e.g. no base key attribute, or a CBC
//     chain stream-unwrap cannot compute).
//   - error: the module or the session failed, not the token answering for
//     the mechanism: CKR_CRYPTOKI_NOT_INITIALIZED, CKR_GENERAL_ERROR,
//     CKR_DEVICE_ERROR, CKR_SESSION_*, CKR_TOKEN_NOT_PRESENT,
//     CKR_OBJECT_HANDLE_INVALID (a key that vanished), unknown codes —
//     every CKR but those by which a token refuses a mechanism, a key's use
//     or a template (CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID,
//     CKR_FUNCTION_NOT_SUPPORTED, CKR_KEY_FUNCTION_NOT_PERMITTED,
//     CKR_KEY_TYPE_INCONSISTENT, CKR_TEMPLATE_INCONSISTENT, ...). Nothing
//     was learnt: the report's incomplete is true, its summary says
//     INCOMPLETE, and p11derive probe exits with status 3.
//
// The probe's test keys carry only the attributes their strategy needs
// (native: CKA_DERIVE; mac-unwrap: CKA_SIGN and CKA_UNWRAP; cmac-unwrap:
// and CKA_ENCRYPT; unwrap: CKA_UNWRAP), since key-usage policies refuse a
// key that may do everything; generated keys, which the strategies must
// share to be cross-checked, have all of them (or, if the token refuses
// that, only the strategy's). A refusal in a read-only session
// (CKR_SESSION_READ_ONLY) is retried in a read-write session only with
// Options.ReadWrite (p11derive probe --rw); base_keys say which session
// made each key, and what the token refused (import_ckr, generate_ckr).
// A test key or DK the token made readable or extractable is tightened (see
// derive.Request.StrictAttributes): the strategy can still be verified, with
// the warning in its notes.
//
// A strategy whose mechanisms the token does not list but which ran (NSS
// softoken's key-database slot runs CKM_AES_ECB_ENCRYPT_DATA without
// listing it) is verified or ran like any other, with a note. When the
// token lists a mechanism without the C_GetMechanismInfo flag for the use
// the strategy makes of it (CKM_AES_ECB without CKF_UNWRAP), the result's
// mechanisms say so (flag false), and so does a note when it fails.
//
// # The key of Options.KeyLabel
//
// With Options.KeyLabel the report also analyses an existing base key,
// reading its attributes and never changing them or deriving from it: for
// each function it can be a key of and each strategy, whether it can use
// it now (it has the attributes the strategy needs, and the strategy is
// verified or ran on this token), with-changes (it would, once the
// attributes in set are true; a key with CKA_MODIFIABLE false must be
// made again), or no (why). It reads the key's CKA_UNWRAP_TEMPLATE and says
// whether it forces CKA_SENSITIVE=true and CKA_EXTRACTABLE=false on every
// key unwrapped with it, which makes MAC-unwrap safe (docs/design.md §3.2): a
// key that may both MAC and unwrap can otherwise be made to reveal E_K(x)
// for any x. The template is an array attribute, read with
// derive.Token.Template, which refuses to follow what a token gives back
// unless the token filled in the buffers it was given (NSS softoken gives
// back the array it was given at creation; the template is then
// "unreadable").
//
// # JSON schema, version 2
//
// Version 2 renamed key.type to key.key_type and added key.id and
// key.usages: the key report's fields that p11derive's key object has too
// (label, id, key_type, len, token_object, usages, warnings) have its
// names and meaning.
//
// WriteJSON writes one object. Fields are added within a version; a field
// that changes meaning or goes away changes schema_version. Absent
// optional fields are left out.
//
//	{
//	  "schema_version": 2,                 // SchemaVersion
//	  "generator": "p11derive probe",
//	  "time": "2025-01-31T12:00:00Z",      // RFC 3339, UTC
//	  "duration_ms": 12,
//	  "list_only": true,                   // only with Options.ListOnly
//	  "token": {
//	    "label", "manufacturer", "model", "serial": string,
//	    "firmware", "hardware": "major.minor",
//	    "slot": number,
//	    "flags": ["rng", "login-required", ...],   // CKF_ token flags
//	    "session": "CKS_RW_PUBLIC_SESSION",        // C_GetSessionInfo: logged in or not
//	    "module": {"description", "manufacturer", "version", "pkcs11_version": string}
//	  },
//	  "verification": {
//	    "method": "known-answer" | "cross-check" | "mixed" | "none",
//	    "base_keys": [{"type": "aes-128" | "des3" | "des" | "generic-32",
//	                   "source": "imported" | "generated" | "none",
//	                   "import_ckr": "CKR_...", "reason": string}]
//	  },
//	  "mechanisms": [{
//	    "name": "CKM_AES_ECB_ENCRYPT_DATA", "code": "0x1104",
//	    "group": "encrypt-data" | "mac" | "cipher" | "kdf" | "wrap" | "keygen",
//	    "listed": bool,
//	    "flags": ["encrypt", "decrypt", "digest", "sign", "verify", "wrap", "unwrap", "derive", "generate", "hw", ...],
//	    "min_key_size", "max_key_size": number,   // as the token reports them
//	    "info_ckr": "CKR_..."                     // C_GetMechanismInfo failed
//	  }],
//	  "results": [{
//	    "kdf": "aes-cbc",                   // p11derive derive --kdf
//	    "params": {"iv": "0001..."},        // the function's parameters (--iv, --prf, --hash, --salt ...)
//	    "strategy": "native",               // p11derive derive --strategy
//	    "status": "verified" | "ran" | "listed" | "failed" | "unavailable",
//	    "verified_by": "known-answer" | "cross-check" | "none",
//	    "calls": 2,                         // PKCS#11 calls per derivation, reading DK back included; 0 if no key was made
//	    "planned_calls": 1,                 // the strategy's own count, reading DK back not included
//	    "median_ns": 12345, "runs": 3,      // when keys were made
//	    "key_type": "AES-128",              // DK
//	    "base_key": "aes-128",              // the probe's base key
//	    "needs": ["CKA_DERIVE"],            // base key attributes that must be true
//	    "mechanisms": [{"name": "CKM_AES_CBC_ENCRYPT_DATA", "listed": true,
//	                    "use": "derive" | "sign" | "unwrap" | "encrypt" | "encrypt+unwrap",
//	                    "flag": true,       // the token gives the CKF_ flags of that use; absent if unknown
//	                    "lacks": "CKF_UNWRAP"}], // the flags it does not give, if any
//	    "ckr": "CKR_MECHANISM_INVALID", "call": "C_DeriveKey",   // a failed call
//	    "reason": string,                   // why it is not verified; "wrong result: ..." for wrong keys
//	    "check_value": "6d60f8",            // DK's, computed in the token
//	    "expected": "6d60f8",               // the reference's (known-answer)
//	    "notes": [string]
//	  }],
//	  "key": {                              // only with Options.KeyLabel or KeyID
//	    "label", "id", "key_type": string,  // id: CKA_ID in hex; key_type: aes, des, des2, des3, generic
//	    "len": number, "token_object": bool,
//	    "usages": ["derive", ...],           // the true ones of CKA_DERIVE, CKA_ENCRYPT, ...
//	    "warnings": [string],                // CKA_ENCRYPT or CKA_EXTRACTABLE on a base key
//	    "attributes": {"CKA_DERIVE": bool, "CKA_SIGN": bool, ..., "CKA_MODIFIABLE": bool},
//	    "unwrap_template": {"state": "present" | "absent" | "unreadable",
//	                        "attributes": {"CKA_SENSITIVE": "true", ...},
//	                        "forces_sensitive": bool, "forces_not_extractable": bool,
//	                        "reason": string},
//	    "mac_unwrap_safe": bool,
//	    "uses": [{"kdf", "params", "strategy",
//	              "usable": "now" | "with-changes" | "no",
//	              "set": ["CKA_DERIVE"],          // attributes to set to true first
//	              "token_status": "verified",     // the result above
//	              "probed_with": "generic-32",    // when the probe's base key was of another type
//	              "reason": string}],
//	    "notes": [string]
//	  }
//	}
package probe
