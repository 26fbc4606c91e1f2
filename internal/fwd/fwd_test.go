package fwd_test

import (
	"crypto/aes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/mechanisms"
)

func TestMain(m *testing.M) { lab.Main(m) }

// keyValue is the known AES key the tests import.
var keyValue = []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}

// data is a block of derivation data.
var data = []byte("0123456789abcdef")

// realTokens are the real tokens the forwarder is tested in front of.
var realTokens = []struct {
	name string
	make func(testing.TB) *lab.Token
}{
	{"softhsm2", func(tb testing.TB) *lab.Token { return lab.SoftHSM2(tb) }},
	{"nss", lab.NSS},
}

// forEachToken runs f on every real token.
func forEachToken(t *testing.T, f func(t *testing.T, real *lab.Token)) {
	for _, rt := range realTokens {
		t.Run(rt.name, func(t *testing.T) { f(t, rt.make(t)) })
	}
}

func isCKR(err error, code uint) bool { return errors.Is(err, pkcs11.Error(code)) }

func requireCKR(t *testing.T, err error, code uint, msgAndArgs ...any) {
	t.Helper()
	require.Error(t, err, msgAndArgs...)
	require.Truef(t, isCKR(err, code), "got %v, want %v", err, pkcs11.Error(code))
}

func xor(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

// flipped is b with the bit the forwarder flips (0x80 of the first byte) flipped.
func flipped(b []byte) []byte {
	out := slices.Clone(b)
	out[0] ^= 0x80
	return out
}

func ecb() []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}
}

func encrypt(ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, k pkcs11.ObjectHandle, block []byte) ([]byte, error) {
	if err := ctx.EncryptInit(sess, ecb(), k); err != nil {
		return nil, err
	}
	return ctx.Encrypt(sess, block)
}

// encryptZero returns E_k(0^16) computed in the token: k's check value.
func encryptZero(t *testing.T, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, k pkcs11.ObjectHandle) []byte {
	t.Helper()
	out, err := encrypt(ctx, sess, k, make([]byte, 16))
	require.NoError(t, err)
	return out
}

// keyTemplate is the template of a derived or unwrapped AES-128 session key.
func keyTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
	}
}

// unwrapTemplate is keyTemplate without CKA_VALUE_LEN, which the wrapped key
// determines (SoftHSM2 refuses it: CKR_ATTRIBUTE_READ_ONLY).
func unwrapTemplate() []*pkcs11.Attribute {
	return slices.DeleteFunc(keyTemplate(), func(a *pkcs11.Attribute) bool { return a.Type == pkcs11.CKA_VALUE_LEN })
}

// derive derives a key from base with mech and its parameter p.
func derive(ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, base pkcs11.ObjectHandle, mech uint, p mechanisms.Params) (pkcs11.ObjectHandle, error) {
	var h pkcs11.ObjectHandle
	err := mechanisms.Call(mech, p, func(m []*pkcs11.Mechanism) error {
		var err error
		h, err = ctx.DeriveKey(sess, m, base, keyTemplate())
		return err
	})
	return h, err
}

func deriveECB(ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, base pkcs11.ObjectHandle) (pkcs11.ObjectHandle, error) {
	return derive(ctx, sess, base, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: data})
}

func mechList(t *testing.T, ctx *pkcs11.Ctx, slot uint) []uint {
	t.Helper()
	ms, err := ctx.GetMechanismList(slot)
	require.NoError(t, err)
	var list []uint
	for _, m := range ms {
		list = append(list, m.Mechanism)
	}
	return list
}

func TestHide(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		// Open the real module first: the forwarder then shares its instance
		// (CKR_CRYPTOKI_ALREADY_INITIALIZED) and leaves it initialised when
		// its own test cleanup finalises it.
		rctx, rsess := lab.Open(t, real)
		all := mechList(t, rctx, real.SlotID)
		require.Subset(t, all, []uint{pkcs11.CKM_AES_ECB_ENCRYPT_DATA, pkcs11.CKM_AES_CBC_ENCRYPT_DATA, pkcs11.CKM_AES_ECB})

		ft := fwd.Wrap(t, real, fwd.Config{Hide: []string{"CKM_AES_ECB_ENCRYPT_DATA", "0x1105"}})
		require.NotEqual(t, real.Module, ft.Module)
		require.Equal(t, real.SlotID, ft.SlotID)
		require.Equal(t, real.InitArgs, ft.InitArgs)
		ctx, sess := lab.Open(t, ft)

		// Gone from the list, nothing else.
		want := slices.DeleteFunc(slices.Clone(all), func(m uint) bool {
			return m == pkcs11.CKM_AES_ECB_ENCRYPT_DATA || m == pkcs11.CKM_AES_CBC_ENCRYPT_DATA
		})
		require.Equal(t, want, mechList(t, ctx, ft.SlotID))
		_, err := ctx.GetMechanismInfo(ft.SlotID, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, nil)})
		requireCKR(t, err, pkcs11.CKR_MECHANISM_INVALID)
		_, err = ctx.GetMechanismInfo(ft.SlotID, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)})
		require.NoError(t, err)

		// Refused at call time through the forwarder...
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-hide")
		n := lab.CountObjects(t, ctx, sess)
		_, err = deriveECB(ctx, sess, k)
		requireCKR(t, err, pkcs11.CKR_MECHANISM_INVALID)
		_, err = derive(ctx, sess, k, pkcs11.CKM_AES_CBC_ENCRYPT_DATA, &mechanisms.AESCBCEncryptDataParams{Data: data})
		requireCKR(t, err, pkcs11.CKR_MECHANISM_INVALID)
		require.Equal(t, n, lab.CountObjects(t, ctx, sess))
		require.Equal(t, 2, fwd.Calls(t, ft, "C_DeriveKey"))

		// ...while the real token, same instance and same key, does it.
		dk, err := deriveECB(rctx, rsess, k)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, lab.AESBlock(t, keyValue, data), make([]byte, 16)), encryptZero(t, rctx, rsess, dk))
		require.NoError(t, rctx.DestroyObject(rsess, dk))

		// Unhidden mechanisms work through the forwarder.
		got, err := encrypt(ctx, sess, k, data)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, keyValue, data), got)
		require.NoError(t, ctx.DestroyObject(sess, k))
	})
}

func TestFaults(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{Faults: []fwd.Fault{
			{Func: "C_Encrypt", N: 2, CKR: pkcs11.CKR_DEVICE_ERROR},
			{Func: "C_DeriveKey", N: 1, CKR: pkcs11.CKR_FUNCTION_FAILED},
			{Func: "C_DestroyObject", N: 1, CKR: pkcs11.CKR_TOKEN_NOT_PRESENT},
		}})
		ctx, sess := lab.Open(t, ft)
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-faults")

		// miekg's Encrypt makes two C_Encrypt calls: the size query (1st
		// call) works, the 2nd fails.
		_, err := encrypt(ctx, sess, k, data)
		requireCKR(t, err, pkcs11.CKR_DEVICE_ERROR)
		require.Equal(t, 2, fwd.Calls(t, ft, "C_Encrypt"))
		// The failed call ended the operation, as on a real token: a new
		// C_EncryptInit works, and the 3rd and 4th calls are forwarded.
		got, err := encrypt(ctx, sess, k, data)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, keyValue, data), got)
		require.Equal(t, 4, fwd.Calls(t, ft, "C_Encrypt"))
		require.Equal(t, 2, fwd.Calls(t, ft, "C_EncryptInit"))

		// Faulted calls are not forwarded: no key derived, none destroyed.
		n := lab.CountObjects(t, ctx, sess)
		_, err = deriveECB(ctx, sess, k)
		requireCKR(t, err, pkcs11.CKR_FUNCTION_FAILED)
		require.Equal(t, n, lab.CountObjects(t, ctx, sess))
		dk, err := deriveECB(ctx, sess, k)
		require.NoError(t, err)
		require.Equal(t, n+1, lab.CountObjects(t, ctx, sess))
		requireCKR(t, ctx.DestroyObject(sess, dk), pkcs11.CKR_TOKEN_NOT_PRESENT)
		require.Equal(t, n+1, lab.CountObjects(t, ctx, sess))
		require.NoError(t, ctx.DestroyObject(sess, dk))
		require.Equal(t, n, lab.CountObjects(t, ctx, sess))
		require.NoError(t, ctx.DestroyObject(sess, k))
	})
}

func TestPersistentFault(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{Faults: []fwd.Fault{{Func: "C_Sign", N: 4, From: true, CKR: pkcs11.CKR_GENERAL_ERROR}}})
		ctx, sess := lab.Open(t, ft)
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-persistent")
		cmac := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CMAC, nil)}
		sign := func() ([]byte, error) {
			if err := ctx.SignInit(sess, cmac, k); err != nil {
				return nil, err
			}
			return ctx.Sign(sess, data)
		}
		mac, err := sign() // calls 1 and 2
		require.NoError(t, err)
		require.Len(t, mac, 16)
		_, err = sign() // calls 3 and 4
		requireCKR(t, err, pkcs11.CKR_GENERAL_ERROR)
		for i := 0; i < 3; i++ { // calls 5, 6, 7: the size queries fail too
			_, err = sign()
			requireCKR(t, err, pkcs11.CKR_GENERAL_ERROR, "sign %d", i)
		}
		require.Equal(t, 7, fwd.Calls(t, ft, "C_Sign"))
		require.Equal(t, 5, fwd.Calls(t, ft, "C_SignInit"))

		// Configure lifts the fault and resets the counters.
		fwd.Configure(t, ft, fwd.Config{})
		again, err := sign()
		require.NoError(t, err)
		require.Equal(t, mac, again)
		require.Equal(t, 2, fwd.Calls(t, ft, "C_Sign"))
	})
}

// An injected CKR_BUFFER_TOO_SMALL does not end the operation (on a real
// token it does not either): what the real module then does with a new
// C_EncryptInit is its own business, and this test records it.
func TestFaultBufferTooSmallKeepsOperation(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{Faults: []fwd.Fault{{Func: "C_Encrypt", N: 1, CKR: pkcs11.CKR_BUFFER_TOO_SMALL}}})
		ctx, sess := lab.Open(t, ft)
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-too-small")
		_, err := encrypt(ctx, sess, k, data)
		requireCKR(t, err, pkcs11.CKR_BUFFER_TOO_SMALL)
		// The operation is still active in the real module, which refuses
		// to start another (this is why other faults end it): finish it.
		requireCKR(t, ctx.EncryptInit(sess, ecb(), k), pkcs11.CKR_OPERATION_ACTIVE)
		got, err := ctx.Encrypt(sess, data)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, keyValue, data), got)
	})
}

func TestCorrupt(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{Corrupt: []string{"C_Encrypt:4", "C_DeriveKey", "C_Sign:2+"}})
		ctx, sess := lab.Open(t, ft)
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-corrupt")
		ek := lab.AESBlock(t, keyValue, data)

		// C_Encrypt:4 is the second encryption's real call.
		got, err := encrypt(ctx, sess, k, data)
		require.NoError(t, err)
		require.Equal(t, ek, got)
		got, err = encrypt(ctx, sess, k, data)
		require.NoError(t, err)
		require.Equal(t, flipped(ek), got, "one bit flipped")
		got, err = encrypt(ctx, sess, k, data)
		require.NoError(t, err)
		require.Equal(t, ek, got)

		// C_DeriveKey, ECB: DK = E_K(data with one bit flipped).
		dk, err := deriveECB(ctx, sess, k)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, lab.AESBlock(t, keyValue, flipped(data)), make([]byte, 16)), encryptZero(t, ctx, sess, dk))
		// CBC: DK = E_K(iv XOR data), the iv with one bit flipped.
		iv := [16]byte{0xa0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
		cbc, err := derive(ctx, sess, k, pkcs11.CKM_AES_CBC_ENCRYPT_DATA, &mechanisms.AESCBCEncryptDataParams{IV: iv, Data: data})
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, lab.AESBlock(t, keyValue, xor(flipped(iv[:]), data)), make([]byte, 16)), encryptZero(t, ctx, sess, cbc))

		// C_Sign:2+: the first MAC (calls 1, 2) is already corrupted.
		cmac := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_CMAC, nil)}
		require.NoError(t, ctx.SignInit(sess, cmac, k))
		bad, err := ctx.Sign(sess, data)
		require.NoError(t, err)

		// Without corrupt, the same calls give the right bits.
		fwd.Configure(t, ft, fwd.Config{})
		require.NoError(t, ctx.SignInit(sess, cmac, k))
		good, err := ctx.Sign(sess, data)
		require.NoError(t, err)
		require.Equal(t, flipped(good), bad)
		dk2, err := deriveECB(ctx, sess, k)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, ek, make([]byte, 16)), encryptZero(t, ctx, sess, dk2))
		for _, h := range []pkcs11.ObjectHandle{dk, cbc, dk2, k} {
			require.NoError(t, ctx.DestroyObject(sess, h))
		}
	})
}

// C_UnwrapKey with corrupt unwraps a wrapped key with one bit flipped. NSS
// unwraps with CKM_AES_ECB, so the result has a known value.
func TestCorruptUnwrapNSS(t *testing.T) {
	ft := fwd.Wrap(t, lab.NSS(t), fwd.Config{Corrupt: []string{"C_UnwrapKey:2"}})
	ctx, sess := lab.Open(t, ft)
	k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-unwrap")
	wrapped := lab.AESBlock(t, keyValue, data) // data wrapped under K: unwraps to the key value data
	unwrap := func() []byte {
		h, err := ctx.UnwrapKey(sess, ecb(), k, wrapped, unwrapTemplate())
		require.NoError(t, err)
		defer ctx.DestroyObject(sess, h)
		return encryptZero(t, ctx, sess, h)
	}
	require.Equal(t, lab.AESBlock(t, data, make([]byte, 16)), unwrap())
	c, err := aes.NewCipher(keyValue)
	require.NoError(t, err)
	value := make([]byte, 16)
	c.Decrypt(value, flipped(wrapped))
	require.Equal(t, lab.AESBlock(t, value, make([]byte, 16)), unwrap(), "unwrapped D_K(wrapped with one bit flipped)")
	require.Equal(t, lab.AESBlock(t, data, make([]byte, 16)), unwrap())
	require.Equal(t, slices.Clone(wrapped), lab.AESBlock(t, keyValue, data), "the caller's buffer is untouched")
	require.NoError(t, ctx.DestroyObject(sess, k))
}

// SoftHSM2 unwraps AES keys only with CKM_AES_KEY_WRAP(_PAD), whose integrity
// check catches the flipped bit.
func TestCorruptUnwrapSoftHSM2(t *testing.T) {
	ft := fwd.Wrap(t, lab.SoftHSM2(t), fwd.Config{Corrupt: []string{"C_UnwrapKey:2"}})
	ctx, sess := lab.Open(t, ft)
	k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-kek", pkcs11.NewAttribute(pkcs11.CKA_WRAP, true))
	x := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, data, "fwd-wrapped", pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true))
	kw := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)}
	wrapped, err := ctx.WrapKey(sess, kw, k, x)
	require.NoError(t, err)
	h, err := ctx.UnwrapKey(sess, kw, k, wrapped, unwrapTemplate())
	require.NoError(t, err)
	require.Equal(t, lab.AESBlock(t, data, make([]byte, 16)), encryptZero(t, ctx, sess, h))
	_, err = ctx.UnwrapKey(sess, kw, k, wrapped, unwrapTemplate())
	require.Error(t, err, "the integrity check of AES key wrap fails on the flipped bit")
	t.Logf("SoftHSM2 C_UnwrapKey(CKM_AES_KEY_WRAP) of a corrupted wrapped key: %v", err)
	for _, o := range []pkcs11.ObjectHandle{h, x, k} {
		require.NoError(t, ctx.DestroyObject(sess, o))
	}
}

func TestConfigureAndCalls(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{})
		ctx, sess := lab.Open(t, ft)
		require.Contains(t, mechList(t, ctx, ft.SlotID), uint(pkcs11.CKM_AES_ECB_ENCRYPT_DATA))
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-configure")
		require.Equal(t, 1, fwd.Calls(t, ft, "C_CreateObject"))

		fwd.Configure(t, ft, fwd.Config{Hide: []string{"CKM_AES_ECB_ENCRYPT_DATA"}})
		require.Zero(t, fwd.Calls(t, ft, "C_CreateObject"), "Configure resets the counters")
		require.NotContains(t, mechList(t, ctx, ft.SlotID), uint(pkcs11.CKM_AES_ECB_ENCRYPT_DATA))
		require.Equal(t, 2, fwd.Calls(t, ft, "C_GetMechanismList"), "miekg asks for the size, then the list")
		_, err := deriveECB(ctx, sess, k)
		requireCKR(t, err, pkcs11.CKR_MECHANISM_INVALID)

		fwd.Configure(t, ft, fwd.Config{})
		require.Contains(t, mechList(t, ctx, ft.SlotID), uint(pkcs11.CKM_AES_ECB_ENCRYPT_DATA))
		dk, err := deriveECB(ctx, sess, k)
		require.NoError(t, err)
		require.Equal(t, 1, fwd.Calls(t, ft, "C_DeriveKey"))
		require.Zero(t, fwd.Calls(t, ft, "C_SignInit"))
		require.NoError(t, ctx.DestroyObject(sess, dk))
		require.NoError(t, ctx.DestroyObject(sess, k))
	})
}

// A copy loaded while the process also uses the real module directly shares
// its instance: C_Initialize passes the real module's
// CKR_CRYPTOKI_ALREADY_INITIALIZED through, and the copy's C_Finalize leaves
// the real module initialised for its direct user.
func TestSharesRealModule(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		rctx, rsess := lab.Open(t, real)
		k := lab.ImportSecretKey(t, rctx, rsess, pkcs11.CKK_AES, keyValue, "fwd-shared")
		ft := fwd.Wrap(t, real, fwd.Config{})
		ctx := pkcs11.New(ft.Module)
		require.NotNil(t, ctx)
		defer ctx.Destroy()
		// No pReserved: for NSS, the copy supplies initargs (unused here, as
		// the softoken is already initialised).
		requireCKR(t, ctx.Initialize(), pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
		requireCKR(t, ctx.Initialize(), pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)
		require.Equal(t, 2, fwd.Calls(t, ft, "C_Initialize"))
		// Same instance: the session and key made directly work through the copy.
		got, err := encrypt(ctx, rsess, k, data)
		require.NoError(t, err)
		require.Equal(t, lab.AESBlock(t, keyValue, data), got)

		require.NoError(t, ctx.Finalize())
		_, err = ctx.GetTokenInfo(ft.SlotID)
		requireCKR(t, err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED)
		_, err = rctx.GetSessionInfo(rsess)
		require.NoError(t, err, "the real module is still initialised")
		require.NoError(t, rctx.DestroyObject(rsess, k))
	})
}

// Two copies in one process are independent: each has its own configuration
// and counters, though they share the real module.
func TestCopiesAreIndependent(t *testing.T) {
	real := lab.SoftHSM2(t)
	lab.Open(t, real)
	a := fwd.Wrap(t, real, fwd.Config{Hide: []string{"CKM_AES_ECB_ENCRYPT_DATA"}})
	b := fwd.Wrap(t, real, fwd.Config{})
	ca, _ := lab.Open(t, a)
	cb, _ := lab.Open(t, b)
	require.NotContains(t, mechList(t, ca, a.SlotID), uint(pkcs11.CKM_AES_ECB_ENCRYPT_DATA))
	require.Contains(t, mechList(t, cb, b.SlotID), uint(pkcs11.CKM_AES_ECB_ENCRYPT_DATA))
	mechList(t, cb, b.SlotID)
	require.Equal(t, 2, fwd.Calls(t, a, "C_GetMechanismList"))
	require.Equal(t, 4, fwd.Calls(t, b, "C_GetMechanismList"))
}

// The counters and the configuration are safe for concurrent use.
func TestConcurrentCalls(t *testing.T) {
	ft := fwd.Wrap(t, lab.SoftHSM2(t), fwd.Config{Hide: []string{"CKM_AES_CMAC"}})
	ctx, _ := lab.Open(t, ft)
	const goroutines, calls = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*calls)
	for range goroutines {
		wg.Go(func() {
			for range calls {
				_, err := ctx.GetMechanismInfo(ft.SlotID, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)})
				if err != nil {
					errs <- err
				}
				fwd.Calls(t, ft, "C_GetMechanismInfo")
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, goroutines*calls, fwd.Calls(t, ft, "C_GetMechanismInfo"))
}

// A subprocess sees the hidden mechanisms gone: pkcs11-tool loads the copy
// (which reads its configuration file), or the library Build returns, which
// reads the P11FWD_* variables of Token.Env. For NSS, pkcs11-tool cannot pass
// the configdir string: the forwarder supplies initargs.
func TestSubprocess(t *testing.T) {
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		t.Fatalf("pkcs11-tool not found: install the Debian package opensc: %v", err)
	}
	list := func(t *testing.T, module string, slot uint, env []string) string {
		t.Helper()
		cmd := exec.Command(tool, "--module", module, "--slot", strconv.FormatUint(uint64(slot), 10), "-M")
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	hide := fwd.Config{Hide: []string{"CKM_AES_ECB_ENCRYPT_DATA"}}
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, hide)
		require.Contains(t, ft.Env, fwd.EnvModule+"="+real.Module)
		require.Contains(t, ft.Env, fwd.EnvHide+"=CKM_AES_ECB_ENCRYPT_DATA")
		if real.Kind == lab.KindSoftHSM2 {
			// The real token lists it (SoftHSM2 needs no init args).
			require.Contains(t, list(t, real.Module, real.SlotID, real.Env), "AES-ECB-ENCRYPT-DATA,")
		}
		for name, module := range map[string]string{"copy": ft.Module, "env": fwd.Build(t)} {
			out := list(t, module, ft.SlotID, ft.Env)
			require.Contains(t, out, "AES-CBC-ENCRYPT-DATA,", name)
			require.NotContains(t, out, "AES-ECB-ENCRYPT-DATA,", name)
		}
		// Faults from the environment, with a CKR by name.
		cmd := exec.Command(tool, "--module", fwd.Build(t), "--slot", strconv.FormatUint(uint64(ft.SlotID), 10), "-M")
		cmd.Env = append(append(os.Environ(), ft.Env...), fwd.EnvFail+"=C_GetMechanismList:1+:CKR_DEVICE_ERROR")
		out, err := cmd.CombinedOutput()
		require.Error(t, err)
		require.Contains(t, string(out), "CKR_DEVICE_ERROR")
	})
}

// A bad configuration fails the test with the forwarder's complaint.
func TestBadConfig(t *testing.T) {
	real := lab.SoftHSM2(t)
	ft := fwd.Wrap(t, real, fwd.Config{})
	lab.Open(t, ft)
	for _, c := range []struct {
		run  func(tb testing.TB)
		want string
	}{
		{func(tb testing.TB) { fwd.Wrap(tb, real, fwd.Config{Hide: []string{"CKM_NOPE"}}) }, "unknown mechanism CKM_NOPE"},
		{func(tb testing.TB) { fwd.Configure(tb, ft, fwd.Config{Faults: []fwd.Fault{{Func: "C_Nope", N: 1}}}) }, "unknown function C_Nope"},
		{func(tb testing.TB) { fwd.Configure(tb, ft, fwd.Config{Faults: []fwd.Fault{{Func: "C_Sign", N: 0}}}) }, "bad call number 0"},
		{func(tb testing.TB) { fwd.Configure(tb, ft, fwd.Config{Corrupt: []string{"C_Login"}}) }, "C_Login has nothing to corrupt"},
		{func(tb testing.TB) { fwd.Configure(tb, ft, fwd.Config{Hide: []string{"A,B"}}) }, `bad entry "A,B"`},
		{func(tb testing.TB) { fwd.Calls(tb, ft, "C_Nope") }, `unknown PKCS#11 function "C_Nope"`},
		{func(tb testing.TB) { fwd.Calls(tb, fwd.Wrap(tb, real, fwd.Config{}), "C_Sign") }, "is not loaded in this process"},
	} {
		require.Contains(t, fatal(t, c.run), c.want)
	}
	// The copy's configuration is unchanged by the failed Configure calls.
	require.Equal(t, 0, fwd.Calls(t, ft, "C_Sign"))
}

// fatal runs f with a testing.TB whose Fatalf stops f, and returns the message.
func fatal(t *testing.T, f func(tb testing.TB)) string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	require.NotEmpty(t, r.msg, "no Fatalf")
	return r.msg
}

type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestBuild(t *testing.T) {
	so := fwd.Build(t)
	require.Equal(t, so, fwd.Build(t), "built once")
	require.True(t, strings.HasSuffix(so, ".so"))
	require.NoFileExists(t, so+".conf", "the built library reads the environment")
}

// boolAttrs reads boolean attributes of an object.
func boolAttrs(t *testing.T, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, h pkcs11.ObjectHandle, types ...uint) map[uint]bool {
	t.Helper()
	var tmpl []*pkcs11.Attribute
	for _, ty := range types {
		tmpl = append(tmpl, pkcs11.NewAttribute(ty, nil))
	}
	got, err := ctx.GetAttributeValue(sess, h, tmpl)
	require.NoError(t, err)
	out := map[uint]bool{}
	for _, a := range got {
		require.Len(t, a.Value, 1)
		out[a.Type] = a.Value[0] != 0
	}
	return out
}

func TestEmulateWeakTemplates(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{WeakTemplates: true})
		ctx, sess := lab.Open(t, ft)
		strict := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false)}
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-weak", strict...)
		weak := map[uint]bool{pkcs11.CKA_SENSITIVE: false, pkcs11.CKA_EXTRACTABLE: true}
		require.Equal(t, weak, boolAttrs(t, ctx, sess, k, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE), "C_CreateObject")

		var dk pkcs11.ObjectHandle
		err := mechanisms.Call(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: data}, func(m []*pkcs11.Mechanism) error {
			var err error
			dk, err = ctx.DeriveKey(sess, m, k, append(keyTemplate(), strict...))
			return err
		})
		require.NoError(t, err)
		require.Equal(t, weak, boolAttrs(t, ctx, sess, dk, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE), "C_DeriveKey")
		// C_SetAttributeValue passes through: the key can be tightened.
		require.NoError(t, ctx.SetAttributeValue(sess, dk, strict))
		require.Equal(t, map[uint]bool{pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false},
			boolAttrs(t, ctx, sess, dk, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE))
		require.NoError(t, ctx.DestroyObject(sess, dk))
		if real.Kind == lab.KindNSS { // SoftHSM2 does not unwrap with CKM_AES_ECB
			uk, err := ctx.UnwrapKey(sess, ecb(), k, data, append(unwrapTemplate(), strict...))
			require.NoError(t, err)
			require.Equal(t, weak, boolAttrs(t, ctx, sess, uk, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE), "C_UnwrapKey")
			require.NoError(t, ctx.DestroyObject(sess, uk))
		}
		gk, err := ctx.GenerateKey(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
			append([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}, strict...))
		require.NoError(t, err)
		require.Equal(t, weak, boolAttrs(t, ctx, sess, gk, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE), "C_GenerateKey")

		for _, h := range []pkcs11.ObjectHandle{gk, k} {
			require.NoError(t, ctx.DestroyObject(sess, h))
		}
	})
}

func TestEmulateNoValueLenPadTokenInfoNoFlag(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{NoValueLen: true, NoFlag: []string{"CKM_AES_ECB:CKF_ENCRYPT"}})
		ctx, sess := lab.Open(t, ft)
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "fwd-novaluelen")
		_, err := ctx.GetAttributeValue(sess, k, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, nil)})
		requireCKR(t, err, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)
		got := boolAttrs(t, ctx, sess, k, pkcs11.CKA_ENCRYPT)
		require.True(t, got[pkcs11.CKA_ENCRYPT])

		info, err := ctx.GetMechanismInfo(ft.SlotID, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)})
		require.NoError(t, err)
		rctx, _ := lab.Open(t, real)
		rinfo, err := rctx.GetMechanismInfo(real.SlotID, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)})
		require.NoError(t, err)
		require.NotZero(t, rinfo.Flags&pkcs11.CKF_ENCRYPT)
		require.Equal(t, rinfo.Flags&^pkcs11.CKF_ENCRYPT, info.Flags)
		// The call itself still goes through.
		require.Equal(t, lab.AESBlock(t, keyValue, data), must(encrypt(ctx, sess, k, data)))
		require.NoError(t, ctx.DestroyObject(sess, k))
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestMaxSessions: a copy playing a token that allows N sessions reports N
// in CK_TOKEN_INFO and answers CKR_SESSION_COUNT for the N+1st, until one
// is closed.
func TestMaxSessions(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{})
		ctx, first := lab.Open(t, ft) // one session open through the copy
		fwd.Configure(t, ft, fwd.Config{MaxSessions: 3})
		info, err := ctx.GetTokenInfo(ft.SlotID)
		require.NoError(t, err)
		require.Equal(t, uint(3), info.MaxSessionCount)
		require.Equal(t, uint(1), info.SessionCount)
		var open []pkcs11.SessionHandle
		for i := 0; i < 2; i++ {
			s, err := ctx.OpenSession(ft.SlotID, pkcs11.CKF_SERIAL_SESSION)
			require.NoError(t, err)
			open = append(open, s)
		}
		_, err = ctx.OpenSession(ft.SlotID, pkcs11.CKF_SERIAL_SESSION)
		requireCKR(t, err, pkcs11.CKR_SESSION_COUNT, "a 4th session")
		require.NoError(t, ctx.CloseSession(open[0]))
		s, err := ctx.OpenSession(ft.SlotID, pkcs11.CKF_SERIAL_SESSION)
		require.NoError(t, err, "a place was given back")
		require.NoError(t, ctx.CloseSession(s))
		require.NoError(t, ctx.CloseSession(open[1]))
		fwd.Configure(t, ft, fwd.Config{})
		info, err = ctx.GetTokenInfo(ft.SlotID)
		require.NoError(t, err)
		require.NotEqual(t, uint(3), info.MaxSessionCount, "the real token's count again")
		t.Logf("%s reports ulMaxSessionCount %#x", real.Kind, info.MaxSessionCount)
		_ = first
	})
}

// TestDelay: a delayed function sleeps about its delay on every call, at
// least the delay less the timer's least overrun, which the forwarder takes
// off (tens of microseconds: a lower bound of 80% of 20-30 ms holds on any
// machine; no speed is asserted), others do not sleep theirs; "*" delays
// every function.
func TestDelay(t *testing.T) {
	real := lab.SoftHSM2(t)
	ft := fwd.Wrap(t, real, fwd.Config{Delays: []fwd.Delay{{Func: "C_GetInfo", D: 30 * time.Millisecond}}})
	ctx, _ := lab.Open(t, ft)
	for i := 0; i < 2; i++ {
		t0 := time.Now()
		_, err := ctx.GetInfo()
		require.NoError(t, err)
		require.GreaterOrEqual(t, time.Since(t0), 24*time.Millisecond, "call %d of C_GetInfo", i+1)
	}
	fwd.Configure(t, ft, fwd.Config{Delays: []fwd.Delay{{Func: "*", D: 20 * time.Millisecond}, {Func: "C_GetInfo", D: 0}}})
	t0 := time.Now()
	_, err := ctx.GetSlotList(true)
	require.NoError(t, err)
	require.GreaterOrEqual(t, time.Since(t0), 16*time.Millisecond, "C_GetSlotList under *")
	require.Contains(t, fatal(t, func(tb testing.TB) {
		fwd.Configure(tb, ft, fwd.Config{Delays: []fwd.Delay{{Func: "C_Nope", D: time.Millisecond}}})
	}), "unknown function C_Nope")
}
