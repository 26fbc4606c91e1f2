package lab_test

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/internal/lab"
)

// rigTokens are the tokens every p11-kit rig is tried on.
var rigTokens = []struct {
	name string
	make func(testing.TB) *lab.Token
}{
	{"SoftHSM2", func(tb testing.TB) *lab.Token { return lab.SoftHSM2(tb) }},
	{"NSS", lab.NSS},
}

// sameToken checks that rigged reaches the token of direct: both list the
// same tokens, and a key of known value imported through each encrypts a
// block to the same answer as crypto/aes.
func sameToken(t *testing.T, direct, rigged *lab.Token) {
	t.Helper()
	dctx, dsess := lab.Open(t, direct)
	rctx, rsess := lab.Open(t, rigged)
	require.ElementsMatch(t, tokenLabels(t, dctx), tokenLabels(t, rctx), "the rig shows the token's module and nothing else")
	info, err := rctx.GetTokenInfo(rigged.SlotID)
	require.NoError(t, err)
	require.Equal(t, direct.Label, info.Label)

	want := goAESBlock(t, keyValue)
	dk := lab.ImportSecretKey(t, dctx, dsess, pkcs11.CKK_AES, keyValue, "rig-direct")
	rk := lab.ImportSecretKey(t, rctx, rsess, pkcs11.CKK_AES, keyValue, "rig-rigged")
	require.Equal(t, want, encryptZeroBlock(t, dctx, dsess, dk))
	require.Equal(t, want, encryptZeroBlock(t, rctx, rsess, rk))
	require.NoError(t, rctx.DestroyObject(rsess, rk))
	require.NoError(t, dctx.DestroyObject(dsess, dk))
}

// tokenLabels lists the labels of the tokens of every slot with a token.
func tokenLabels(t *testing.T, ctx *pkcs11.Ctx) []string {
	t.Helper()
	var labels []string
	for _, s := range slotIDs(t, ctx) {
		info, err := ctx.GetTokenInfo(s)
		require.NoError(t, err)
		labels = append(labels, info.Label)
	}
	return labels
}

func envValue(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func TestProxy(t *testing.T) {
	for _, rt := range rigTokens {
		t.Run(rt.name, func(t *testing.T) {
			tok := rt.make(t)
			pt := lab.Proxy(t, tok)
			require.Equal(t, "p11-kit-proxy.so", filepath.Base(pt.Module))
			require.NotEqual(t, tok.Module, pt.Module)
			require.Empty(t, pt.InitArgs)
			require.Equal(t, tok.Label, pt.Label)
			home, ok := envValue(pt.Env, "HOME")
			require.True(t, ok, "Env has HOME: %q", pt.Env)
			require.FileExists(t, filepath.Join(home, ".config/pkcs11/pkcs11.conf"))
			for _, kv := range tok.Env {
				require.Contains(t, pt.Env, kv)
			}
			sameToken(t, tok, pt)
		})
	}
}

// TestProxyFunctionLists records how p11-kit-proxy.so hands out function
// lists: a new one per C_GetFunctionList, each needing its own C_Initialize,
// with its own sessions, over one instance of the module (object handles are
// the module's).
func TestProxyFunctionLists(t *testing.T) {
	tok := lab.SoftHSM2(t)
	pt := lab.Proxy(t, tok)

	a, b, err := lab.FunctionLists(pt.Module)
	require.NoError(t, err)
	require.NotEqual(t, a, b, "each C_GetFunctionList returns a new function list")

	ctx, sess := lab.Open(t, pt) // list 1
	k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "list-1")

	other := pkcs11.New(pt.Module) // list 2, same loaded library
	require.NotNil(t, other)
	t.Cleanup(other.Destroy)
	_, err = other.GetSlotList(true)
	require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED), "a new list is not initialised although list 1 is")
	require.NoError(t, other.Initialize(), "its C_Initialize answers CKR_OK, not CKR_CRYPTOKI_ALREADY_INITIALIZED")
	t.Cleanup(func() { other.Finalize() })

	_, err = other.GetSessionInfo(sess)
	require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID), "sessions of list 1 are unknown to list 2")
	s2, err := other.OpenSession(pt.SlotID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	require.NoError(t, err)
	attrs, err := other.GetAttributeValue(s2, k, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil)})
	require.NoError(t, err, "object handles are the module's: list 2 sees list 1's session object")
	require.Equal(t, "list-1", string(attrs[0].Value))

	// C_Finalize of one list leaves the other working.
	third := pkcs11.New(pt.Module)
	require.NotNil(t, third)
	require.NoError(t, third.Initialize())
	require.NoError(t, third.Finalize())
	third.Destroy()
	_, err = other.GetSessionInfo(s2)
	require.NoError(t, err)
	require.Equal(t, goAESBlock(t, keyValue), encryptZeroBlock(t, other, s2, k))
}

// TestProxyConfigReadOnce records when p11-kit-proxy.so reads its
// configuration: in the first C_GetFunctionList of the loaded library (which
// loads the registered modules into the new list), and never again while the
// library stays loaded: every list keeps its modules until the library is
// unloaded, even after C_Finalize of every list.
func TestProxyConfigReadOnce(t *testing.T) {
	a, b := lab.SoftHSM2(t), lab.SoftHSM2(t)
	lab.Open(t, b) // initialised with its SOFTHSM2_CONF, had the proxy switched to it
	pt := lab.Proxy(t, a)
	file, err := lab.ProxyModuleFile(pt)
	require.NoError(t, err)
	serial := func(ctx *pkcs11.Ctx) string {
		t.Helper()
		slots := slotIDs(t, ctx)
		require.NotEmpty(t, slots)
		info, err := ctx.GetTokenInfo(slots[0])
		require.NoError(t, err)
		return info.SerialNumber
	}
	directSerial := func(tok *lab.Token) string {
		ctx, _ := lab.Open(t, tok)
		info, err := ctx.GetTokenInfo(tok.SlotID)
		require.NoError(t, err)
		return info.SerialNumber
	}
	serialA, serialB := directSerial(a), directSerial(b)
	require.NotEqual(t, serialA, serialB)

	c1 := pkcs11.New(pt.Module)
	require.NoError(t, c1.Initialize())
	require.Equal(t, serialA, serial(c1))

	conf, err := os.ReadFile(file)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, []byte(strings.Replace(string(conf), a.Module, b.Module, 1)), 0o600))

	c2 := pkcs11.New(pt.Module)
	require.NoError(t, c2.Initialize())
	require.Equal(t, serialA, serial(c2), "not reread while list 1 is initialised")
	require.NoError(t, c1.Finalize())
	require.NoError(t, c2.Finalize())
	c1.Destroy()
	c2.Destroy()

	c3 := pkcs11.New(pt.Module)
	require.NoError(t, c3.Initialize())
	require.Equal(t, serialA, serial(c3), "not reread after every list was finalised either")
	require.NoError(t, c3.Finalize())
	c3.Destroy()
}

// TestProxySubprocess reaches a Proxy token from a child process with
// Token.Env. p11-kit ignores user configuration (HOME) as root, so as root
// the child sees the system's modules instead.
func TestProxySubprocess(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("p11-kit ignores ~/.config/pkcs11 as root: a child cannot reach a Proxy token through HOME")
	}
	tok := lab.SoftHSM2(t)
	pt := lab.Proxy(t, tok)
	ctx, sess := lab.Open(t, tok)
	lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "proxy-child", pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
	require.Equal(t, 1, countInChild(t, pt, "proxy-child"))
}

func TestRPC(t *testing.T) {
	for _, rt := range rigTokens {
		t.Run(rt.name, func(t *testing.T) {
			tok := rt.make(t)
			var pid int
			t.Run("rig", func(t *testing.T) {
				rpc := lab.RPC(t, tok)
				var ok bool
				pid, ok = lab.RPCServerPID(rpc)
				require.True(t, ok)
				require.Equal(t, "p11-kit-client.so", filepath.Base(rpc.Module))
				require.Equal(t, tok.InitArgs, rpc.InitArgs, "the client forwards pReserved to the server")
				addr, ok := envValue(rpc.Env, "P11_KIT_SERVER_ADDRESS")
				require.True(t, ok, "Env has P11_KIT_SERVER_ADDRESS: %q", rpc.Env)
				require.True(t, strings.HasPrefix(addr, "unix:path=/"), addr)
				sameToken(t, tok, rpc)
			})
			// The rig's cleanup killed and waited for the server and
			// its children: nothing is left in its process group.
			require.NotZero(t, pid)
			require.ErrorIs(t, syscall.Kill(-pid, 0), syscall.ESRCH, "process group %d is gone", pid)
		})
	}
}

// TestRPCMechanisms records what p11-kit 0.24's RPC does to mechanisms:
// those whose parameters it cannot serialise leave C_GetMechanismList, and
// C_DeriveKey with CKM_AES_ECB_ENCRYPT_DATA (CK_KEY_DERIVATION_STRING_DATA)
// is refused with CKR_MECHANISM_INVALID although the token does it.
func TestRPCMechanisms(t *testing.T) {
	for _, rt := range rigTokens {
		t.Run(rt.name, func(t *testing.T) {
			tok := rt.make(t)
			rpc := lab.RPC(t, tok)
			dctx, dsess := lab.Open(t, tok)
			rctx, rsess := lab.Open(t, rpc)
			dm, rm := mechanisms(t, dctx, tok.SlotID), mechanisms(t, rctx, rpc.SlotID)
			var dropped []string
			for m := range dm {
				if !rm[m] {
					dropped = append(dropped, ckm.Name(m))
				}
			}
			for m := range rm {
				require.True(t, dm[m], "the RPC adds no mechanism (%s)", ckm.Name(m))
			}
			sort.Strings(dropped)
			t.Logf("%s: the RPC drops %d of %d mechanisms: %s", tok.Kind, len(dropped), len(dm), strings.Join(dropped, " "))
			for _, m := range []uint{pkcs11.CKM_AES_ECB_ENCRYPT_DATA, pkcs11.CKM_AES_CBC, pkcs11.CKM_AES_CMAC} {
				require.True(t, dm[m], "%s lists %s", tok.Kind, ckm.Name(m))
				require.False(t, rm[m], "the RPC drops %s", ckm.Name(m))
			}
			require.True(t, rm[pkcs11.CKM_AES_ECB], "the RPC keeps CKM_AES_ECB")

			params, free := lab.EncryptDataParams(make([]byte, 16))
			defer free()
			mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, params)}
			tmpl := func() []*pkcs11.Attribute {
				return []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
					pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
					pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
					pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
				}
			}
			dk := lab.ImportSecretKey(t, dctx, dsess, pkcs11.CKK_AES, keyValue, "rpc-derive")
			derived, err := dctx.DeriveKey(dsess, mech, dk, tmpl())
			require.NoError(t, err, "the token itself derives")
			require.NoError(t, dctx.DestroyObject(dsess, derived))
			rk := lab.ImportSecretKey(t, rctx, rsess, pkcs11.CKK_AES, keyValue, "rpc-derive")
			_, err = rctx.DeriveKey(rsess, mech, rk, tmpl())
			var ckr pkcs11.Error
			require.True(t, errors.As(err, &ckr), "%v", err)
			require.Equal(t, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID), ckr)
		})
	}
}

// TestRPCSubprocess reaches an RPC token from a child process with Token.Env
// alone (P11_KIT_SERVER_ADDRESS), as the CLI under testscript would.
func TestRPCSubprocess(t *testing.T) {
	tok := lab.SoftHSM2(t)
	rpc := lab.RPC(t, tok)
	ctx, sess := lab.Open(t, tok)
	lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "rpc-child", pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
	require.Equal(t, 1, countInChild(t, rpc, "rpc-child"))
}
