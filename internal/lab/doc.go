// Package lab makes real, throwaway PKCS#11 tokens for tests: no mocks. Every
// token is a real module from a Debian package, set up in a temporary
// directory and gone when the test (or, for shared tokens, the test binary)
// ends.
//
//   - SoftHSM2 (package softhsm2) returns a fresh, initialised SoftHSM2 token
//     on every call, living as long as the test. HideMechanisms makes SoftHSM2
//     leave mechanisms out of C_GetMechanismList (and refuse them), so one
//     token can play several capability sets. SharedSoftHSM2 returns one token
//     for the whole test binary.
//   - NSS and NSSDB (packages libnss3, libnss3-tools) return the two slots of
//     the NSS softoken (libsoftokn3.so): NSS is "NSS Generic Crypto Services"
//     (slot 1: session objects only, no login, advertises the *_ENCRYPT_DATA
//     mechanisms); NSSDB is "NSS Certificate DB" (slot 2: token objects in a
//     key4.db that other processes can open; no *_ENCRYPT_DATA in its
//     mechanism list although C_DeriveKey with them works there).
//   - Proxy and RPC reach any of those tokens through p11-kit: in process
//     through p11-kit-proxy.so, or through p11-kit-client.so and a
//     "p11-kit server" subprocess (see "Through p11-kit" below).
//
// A Token says everything needed to reach the token, in-process or from a
// subprocess: Module, InitArgs (the C_Initialize pReserved string), SlotID,
// Label, whether to log in (Login) and with which PIN, and Env, the
// environment a subprocess needs (SOFTHSM2_CONF for SoftHSM2).
//
// Open initialises the module and opens a logged-in read/write session;
// ImportSecretKey creates a session secret key of a known value; CountObjects
// counts every object a session sees, so a test can prove that nothing was
// left behind.
//
// Example functions take no testing.TB: MainExamples, called from TestMain
// in place of Main, makes them a SoftHSM2 token of their own and hands it
// over in the environment (P11DERIVE_MODULE, P11DERIVE_TOKEN,
// P11DERIVE_PIN), as a program's configuration would.
//
// # A missing tool fails the test
//
// If softhsm2-util, certutil or a module is missing, the test fails with a
// message that names the Debian package to install: a test that cannot fail
// proves nothing. Setting P11DERIVE_LAB_SKIP=1 in the environment skips the
// tests that need lab tokens instead.
//
// # SoftHSM2: one instance per loaded copy of the library
//
// SoftHSM2 reads its configuration (SOFTHSM2_CONF) once, in C_Initialize, and a
// process has one SoftHSM2 instance per loaded copy of libsofthsm2.so: a second
// pkcs11.New of the same path gets the same instance, already initialised with
// the first configuration (C_Initialize answers
// CKR_CRYPTOKI_ALREADY_INITIALIZED), so it sees the first token, not the
// second. C_Finalize and C_Initialize again with another SOFTHSM2_CONF does
// switch configurations, but it pulls the instance from under everybody else
// in the process. What works, and what this package does, is one copy of
// libsofthsm2.so per token: Token.Module is DIR/libsofthsm2.so, and dlopen of a
// different file gives an independent instance (its own configuration, slots,
// sessions and login state; unloading one does not disturb the others).
//
// The rule for tests: SOFTHSM2_CONF must hold the token's configuration when
// its module is initialised. Open does that itself (under a lock, restoring the
// environment afterwards). Code under test that initialises Token.Module itself,
// in-process, needs Token.Setenv(t) first (not allowed in parallel tests), or
// lab.Open before it (then the module is already initialised for the right
// configuration, if the code tolerates CKR_CRYPTOKI_ALREADY_INITIALIZED). A
// subprocess needs Token.Env in its environment. Once initialised, an instance
// keeps its configuration whatever the environment says later.
// SharedSoftHSM2 sets its SOFTHSM2_CONF in the process environment for good,
// so code under test needs nothing more for it; a SoftHSM2 module loaded from
// any other path (such as /usr/lib/softhsm/libsofthsm2.so) then also reads the
// shared token's configuration.
//
// Open and code under test share the instance of a module: Open tolerates
// CKR_CRYPTOKI_ALREADY_INITIALIZED, but code that treats it as an error (such as
// crypto11) must initialise the module before Open does. On a token from
// SoftHSM2, the last session Open made calls C_Finalize when its test ends,
// which invalidates any session the code under test still holds on that
// instance; shared tokens (SharedSoftHSM2, NSS, NSSDB) stay initialised until
// Main returns.
//
// A token from SoftHSM2 lives as long as the test that made it (its directory
// is a t.TempDir).
//
// # Shared tokens: NSS, NSSDB, SharedSoftHSM2
//
// The NSS softoken is one instance per loaded path, initialised with one
// configuration directory until C_Finalize. A copy of libsoftokn3.so does load
// as a second instance, but the copies share libfreeblpriv3 and libnssutil3,
// and C_Finalize of one tears that shared state down: the other's
// C_GenerateKey and C_GenerateRandom then fail with CKR_ARGUMENTS_BAD. So the
// lab loads the softoken once per process, and NSS and NSSDB share one
// database directory, made on first use. It and the directory of SharedSoftHSM2 are removed when the test
// binary ends, which needs the package's TestMain to call Main:
//
//	func TestMain(m *testing.M) { lab.Main(m) }
//
// NSS, NSSDB and SharedSoftHSM2 fail the test otherwise. Everything on a
// shared token is shared across tests: session objects made by one test are
// visible to the sessions of every other test on that slot (of the same
// module instance), and token objects persist until the binary ends. Give
// token objects unique labels, and compare CountObjects before and after
// rather than with zero; tests that count objects must not run in parallel
// with other tests on the same shared token.
//
// # NSS login, found empirically (NSS 3.87)
//
// The database is made by "certutil -N --empty-password". Slot 1 (NSS) does not
// support login at all: C_Login(CKU_USER, "") answers CKR_USER_TYPE_INVALID,
// so its Token has Login false. It takes session objects (C_CreateObject of a
// CKO_SECRET_KEY with CKA_VALUE, C_GenerateKey, C_DeriveKey) and refuses token
// objects with CKR_TOKEN_WRITE_PROTECTED. Slot 2 (NSSDB) reports
// CKF_USER_PIN_INITIALIZED without CKF_LOGIN_REQUIRED: with an empty password it
// behaves as logged in from the start (private token objects can be created
// and found without C_Login), C_Login(CKU_USER, "") answers CKR_OK every time
// (never CKR_USER_ALREADY_LOGGED_IN), C_Logout answers CKR_USER_NOT_LOGGED_IN,
// and C_GetSessionInfo keeps reporting CKS_RW_PUBLIC_SESSION.
// InitArgs flags must be empty: flags=readOnly makes NSSDB refuse token objects
// (CKR_SESSION_READ_ONLY) and flags=noCertDB leaves slot 2 without its database.
//
// # Through p11-kit: Proxy and RPC (found empirically, p11-kit 0.24.1)
//
// Proxy(tb, tok) returns a Token reaching tok through p11-kit-proxy.so, in
// process; RPC(tb, tok) one reaching it through p11-kit-client.so and a
// "p11-kit server" subprocess. Both look up the slot by label, as p11-kit
// numbers it (the proxy numbers slots from 0x11; the RPC keeps the
// module's slot IDs).
//
// Proxy copies p11-kit-proxy.so into a t.TempDir (a copy is an independent
// p11-kit instance, as with SoftHSM2) and writes a configuration
// registering tok.Module alone, as module "lab" (critical, with
// x-init-reserved: tok.InitArgs for NSS), under DIR/home/.config/pkcs11 with
// pkcs11.conf saying "user-config: only", so that the system's modules
// (/usr/share/p11-kit/modules: p11-kit-trust, opensc, softhsm2) stay out.
// p11-kit skips user configuration as root (getuid() == 0) or setuid, so in
// process Proxy points the copy at that configuration with
// p11_kit_override_system_files (exported, "for test suites") before anything
// loads it; Token.Env holds HOME for a subprocess, which works only when not
// running as root (TestProxySubprocess is skipped as root: use RPC to reach a
// token from a subprocess). Proxy keeps tok's own module initialised until the
// test ends: p11-kit never calls C_Finalize on a module that answered
// CKR_CRYPTOKI_ALREADY_INITIALIZED, so the proxy shares the instance without
// tearing it down (for NSS, the process's one softoken: session objects made
// directly are visible through the proxy and the other way round).
//
// What p11-kit-proxy.so does (TestProxyFunctionLists, TestProxyConfigReadOnce):
//
//   - Every C_GetFunctionList returns a new function list (another pointer),
//     each with its own state: a second list answers
//     CKR_CRYPTOKI_NOT_INITIALIZED until its own C_Initialize, which answers
//     CKR_OK (not CKR_CRYPTOKI_ALREADY_INITIALIZED) while the first list is
//     initialised. pkcs11.New calls C_GetFunctionList, so two pkcs11.Ctx of
//     the same path are two independent lists.
//   - Session handles belong to a list: a session opened through one list is
//     CKR_SESSION_HANDLE_INVALID through another. Object handles are the
//     module's: an object made through one list is usable through another
//     list's session. C_Finalize of one list leaves the others working.
//   - The configuration (and HOME) is read in C_GetFunctionList, when the
//     first list of the loaded library loads the registered modules, and
//     never again while the library stays loaded: every list keeps its
//     modules until the library is unloaded, even after every list was
//     finalised. So one loaded proxy cannot serve another configuration to
//     the next test, hence one copy per Proxy. The environment a module
//     reads in its C_Initialize (SOFTHSM2_CONF) is read when the first list
//     is initialised. Rule for in-process use: the environment (Token.Setenv)
//     must hold before pkcs11.New of the Module; Open sets tok.Env around
//     both pkcs11.New and C_Initialize.
//
// RPC runs "p11-kit server --foreground --name DIR/sock tok.Module" with
// tok.Env (SOFTHSM2_CONF) in its environment, in its own process group, and
// waits (at most 30s) for the P11_KIT_SERVER_ADDRESS line it prints once it
// listens. The server forks a "p11-kit remote" child per connection, which
// loads its own instance of the module: objects reach across only as token
// objects (TestRPCSubprocess). C_Initialize's pReserved string crosses the
// RPC, so the RPC token keeps tok.InitArgs (NSS gets its database that way,
// no configuration needed). p11-kit-client.so reads P11_KIT_SERVER_ADDRESS
// in C_GetFunctionList, each list connecting to the address of its time:
// code under test needs Token.Setenv before pkcs11.New; a subprocess needs
// Token.Env. Module is a copy of p11-kit-client.so per server, so Open keeps
// one module per server. At the end of the test, RPC waits (at most 10s) for
// the server's children to exit (they do when their client finalises), then
// SIGTERMs the server and waits for it; a child still connected then is
// killed and the test fails.
//
// The RPC leaves out of C_GetMechanismList every mechanism whose parameters
// it cannot serialise or does not know to have none, and the client refuses
// them: C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA answers
// CKR_MECHANISM_INVALID on both tokens, although both do it directly
// (TestRPCMechanisms, which logs the full lists). Dropped from SoftHSM2
// 2.6.1 (34 of 70): CKM_AES_CBC, CKM_AES_CBC_PAD, CKM_AES_CTR, CKM_AES_GCM,
// CKM_AES_CMAC, CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD, CKM_DES_CBC(_PAD),
// CKM_DES3_CBC(_PAD), CKM_DES3_CMAC, every CKM_*_ECB_ENCRYPT_DATA and
// CKM_*_CBC_ENCRYPT_DATA (AES, DES, DES3), CKM_DH_PKCS_DERIVE,
// CKM_ECDH1_DERIVE, CKM_DSA_SHA224..512, CKM_SHA224, CKM_SHA224_HMAC,
// CKM_SHA224_RSA_PKCS, the CKM_SHA*_RSA_PKCS_PSS and two vendor mechanisms.
// Dropped from NSS slot 1 (157 of 210): the same families plus
// CKM_CONCATENATE_BASE_AND_DATA, CKM_CONCATENATE_BASE_AND_KEY,
// CKM_CONCATENATE_DATA_AND_BASE, CKM_XOR_BASE_AND_DATA,
// CKM_EXTRACT_KEY_FROM_KEY, CKM_SP800_108_COUNTER_KDF,
// CKM_SP800_108_FEEDBACK_KDF, CKM_SP800_108_DOUBLE_PIPELINE_KDF, CKM_HKDF_*,
// CKM_AES_CMAC_GENERAL, CKM_AES_MAC_GENERAL, CKM_AES_XCBC_MAC(_96),
// CKM_AES_CTS, every *_HMAC_GENERAL and *_KEY_DERIVATION, the ECDSA with
// hash, TLS/SSL, PBE, Camellia, SEED, RC2 and CDMF mechanisms and NSS's
// vendor ones. CKM_AES_ECB, CKM_AES_KEY_GEN and CKM_GENERIC_SECRET_KEY_GEN
// stay.
package lab
