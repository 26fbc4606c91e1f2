// Package fwd puts a forwarding PKCS#11 module of the project's own in front
// of a real lab token (package lab), so that one real token can play many
// capability sets and misbehave on demand. It is for tests only.
//
// The forwarder (csrc/p11fwd.c, a PKCS#11 v2.40 module in C) forwards every
// call to the real module and can
//
//   - hide mechanisms: they vanish from C_GetMechanismList, C_GetMechanismInfo
//     answers CKR_MECHANISM_INVALID for them, and so does every call that
//     takes a CK_MECHANISM (C_EncryptInit, C_DecryptInit, C_DigestInit,
//     C_SignInit, C_SignRecoverInit, C_VerifyInit, C_VerifyRecoverInit,
//     C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey),
//     without forwarding it. Only the mechanism itself is checked, not a
//     mechanism named inside its parameter (such as the PRF of an SP 800-108
//     KDF);
//   - fail the Nth call of a function (1-based, counted since the last
//     configuration), or every call from the Nth on, with a chosen CKR,
//     without forwarding it. Several faults may be set at once; the first that
//     matches wins. A fault with CKR_OK skips the call and reports success.
//     When the failed call would have continued or finished an operation
//     (C_Encrypt, C_SignUpdate, C_DigestFinal, ...), the forwarder also ends
//     that operation in the real module, as a failing call does on a real
//     token, so the caller can start the next one (except for
//     C_SignRecover, C_VerifyRecover and an injected CKR_BUFFER_TOO_SMALL);
//   - corrupt results, to simulate a token that returns wrong bits: it flips
//     the top bit (0x80) of the first byte, never the low bit, which DES
//     parity would hide. Outputs of C_Encrypt, C_Decrypt, C_Sign, C_Digest,
//     C_SignRecover, C_VerifyRecover, C_WrapKey, the Update/Final and dual
//     functions are flipped after a successful call; for C_UnwrapKey, the
//     wrapped key is flipped (in a copy) before the call; for C_DeriveKey,
//     the first data byte of a CK_KEY_DERIVATION_STRING_DATA
//     (CKM_*_ECB_ENCRYPT_DATA, CKM_CONCATENATE_BASE_AND_DATA,
//     CKM_CONCATENATE_DATA_AND_BASE, CKM_XOR_BASE_AND_DATA) or the first
//     byte of the iv of CKM_*_CBC_ENCRYPT_DATA, in a copy; other derivation
//     mechanisms go through unchanged. Naming any other function is an
//     error;
//   - clear CKF_ flags of a mechanism in C_GetMechanismInfo (noflag): a token
//     that lists CKM_AES_ECB without CKF_UNWRAP, say; calls are still
//     forwarded;
//   - emulate misbehaving tokens (emulate=, Config's Emulate*, WeakTemplates,
//     NoValueLen, PadTokenInfo): weak-templates leaves CKA_SENSITIVE and
//     CKA_EXTRACTABLE out of the templates of C_CreateObject, C_GenerateKey,
//     C_UnwrapKey and C_DeriveKey and asks for CKA_SENSITIVE=false,
//     CKA_EXTRACTABLE=true instead (C_SetAttributeValue passes through, so
//     a caller may tighten the key afterwards); no-value-len answers
//     C_GetAttributeValue for CKA_VALUE_LEN as for an attribute the object
//     lacks; pad-token-info pads CK_TOKEN_INFO's strings with NULs instead of
//     spaces; stream-unwrap plays a token that unwraps one block in CTR, OFB
//     or CFB-128 mode. A module whose calls answer CKR_CRYPTOKI_NOT_INITIALIZED
//     behind working slot and token functions is a list of faults
//     (Uninitialised);
//   - sleep before calls (delay): the round trip of a network HSM, played,
//     per function or for every function. It sleeps, it does not spin, so
//     other threads' calls go on meanwhile and concurrency can hide it. A
//     sleep overruns by the machine's timer latency (~35 us for 200 us on
//     this workplace's VM, with the timer slack at 1 ns); the forwarder
//     ends each sleep early by the least overrun it has seen, so that a
//     call is delayed by the delay asked for, not by it plus that latency
//     (a CPU too busy to run the thread at once still adds its wait, as it
//     would for a real round trip);
//   - play a token that allows N open sessions (max-sessions): C_GetTokenInfo
//     reports N as ulMaxSessionCount (and the sessions open through the copy
//     as ulSessionCount), and C_OpenSession answers CKR_SESSION_COUNT,
//     without forwarding, while N sessions opened through the copy are open;
//   - count the calls of every function (Calls).
//
// It never prints key material: its only output is a configuration error on
// stderr.
//
// # Configuration
//
// A configuration is a list of settings KEY=VALUE, separated by ';' or
// newlines (a line starting with '#' is a comment); lists are separated by
// commas and may be given in several settings:
//
//	module=PATH           the real module (required; file and environment only)
//	initargs=STRING       pReserved for the real C_Initialize when the caller passes none
//	                      (file and environment only; see below)
//	hide=MECH,...         CKM_ names (CKM_AES_ECB_ENCRYPT_DATA) or numbers (0x1104)
//	fail=FUNC:N:CKR,...   fail the Nth call of FUNC; FUNC:N+:CKR fails every call from the Nth on;
//	                      CKR is a name (CKR_DEVICE_ERROR) or a number (0x30)
//	corrupt=FUNC,...      every call; FUNC:N only the Nth, FUNC:N+ every call from the Nth on
//	noflag=MECH:CKF,...   clear the flag (CKF_UNWRAP, or a number) of MECH in C_GetMechanismInfo
//	emulate=FEATURE,...   stream-unwrap, weak-templates, no-value-len, pad-token-info
//	delay=FUNC:USEC,...   every call of FUNC is delayed USEC microseconds first (a sleep); *:USEC every function
//	                      (later entries win, so "*:200,C_GetInfo:0" spares C_GetInfo)
//	max-sessions=N        at most N sessions open through the copy (0: no bound)
//
// For example "hide=CKM_AES_ECB_ENCRYPT_DATA,CKM_AES_CBC_ENCRYPT_DATA;fail=C_Sign:2:CKR_DEVICE_ERROR;corrupt=C_UnwrapKey".
// Mechanism and CKR names are every CKM_ and CKR_ macro of the NSS
// <pkcs11.h> (PKCS#11 3.0 constants included), a table that Build generates
// from the header; function names are the 68 of the v2.40 function list.
//
// A copy of the forwarder reads its configuration at C_Initialize, when it
// loads the real module:
//
//  1. from the file "<path of the copy>.conf" (the copy finds its path with
//     dladdr) if that file exists: Wrap writes one, so a copy carries its own
//     configuration, in-process and in subprocesses alike, without anything in
//     the environment, and parallel tests cannot see each other's settings;
//  2. otherwise from the environment: P11FWD_MODULE, P11FWD_INITARGS,
//     P11FWD_HIDE, P11FWD_FAIL, P11FWD_CORRUPT, P11FWD_NOFLAG, P11FWD_EMULATE,
//     P11FWD_DELAY, P11FWD_MAX_SESSIONS (the values of the settings above).
//     Wrap puts the same values in Token.Env, for a subprocess that loads a
//     copy without a file, such as the one Build returns.
//
// The file, when present, wins entirely: the P11FWD_* variables are then
// ignored. Hide, fail and corrupt are read once per load of the copy (a
// C_Finalize and C_Initialize again keep the configuration in force);
// Configure replaces them at run time, in-process, through the exported C
// function p11fwd_configure, which takes the same syntax without module and
// initargs. Every configuration resets the call counters.
//
// C_Initialize's argument is passed to the real module unchanged, so NSS gets
// its configdir string (pReserved) from the caller. Only when the caller
// passes no pReserved (pkcs11-tool, say) and initargs is set does the
// forwarder supply initargs as pReserved: that lets tools without a way to
// pass NSS's parameters reach the NSS softoken through the forwarder.
//
// # Sharing the real module
//
// The forwarder dlopens the real module by its path, so a process that also
// loads the real module directly (lab.Open(real)) shares one instance with
// it: the same objects, sessions and login state. When the real module
// answers CKR_CRYPTOKI_ALREADY_INITIALIZED, the forwarder passes that through
// and works on; its C_Finalize then leaves the real module initialised (it
// finalises only what its own C_Initialize initialised), so finalising a
// forwarder never pulls the real token from under a direct user.
//
// A token returned by Wrap follows the rules of the real one (see package
// lab): for SoftHSM2, SOFTHSM2_CONF must be in the environment when the real
// module is first initialised (lab.Open does it; Token.Env carries it); the
// NSS softoken stays initialised until lab.Main returns.
//
// # Counting calls
//
// Calls counts every call that crossed the PKCS#11 API of the copy, as
// pkcs11-spy would log it, including calls answered with an injected fault or
// CKR_MECHANISM_INVALID. github.com/miekg/pkcs11 makes two calls for each
// Encrypt, Decrypt, Sign, Digest, ... (one with a NULL buffer for the size,
// then the real one), so ctx.Sign is C_Sign calls 1 and 2, and "the second
// C_Sign" is the one that produces the first signature.
package fwd
