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
package lab
