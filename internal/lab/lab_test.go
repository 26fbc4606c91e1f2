package lab_test

import (
	"crypto/aes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

func TestMain(m *testing.M) { lab.Main(m) }

// keyValue is the known AES key the tests import.
var keyValue = []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}

func TestSoftHSM2(t *testing.T) {
	tok := lab.SoftHSM2(t)
	require.Equal(t, lab.KindSoftHSM2, tok.Kind)
	require.True(t, strings.HasPrefix(tok.Module, tok.Dir+string(os.PathSeparator)), "module %s is a copy in %s", tok.Module, tok.Dir)
	require.FileExists(t, tok.Module)
	require.Equal(t, []string{"SOFTHSM2_CONF=" + tok.Dir + "/softhsm2.conf"}, tok.Env)
	require.Empty(t, tok.InitArgs)
	require.True(t, tok.Login)
	exercise(t, tok, true)
}

func TestNSS(t *testing.T) {
	tok := lab.NSS(t)
	require.Equal(t, lab.KindNSS, tok.Kind)
	require.Equal(t, uint(1), tok.SlotID)
	require.Equal(t, "NSS Generic Crypto Services", tok.Label)
	require.False(t, tok.Login)
	require.Contains(t, tok.InitArgs, "configdir='sql:"+tok.Dir+"'")
	require.FileExists(t, tok.Dir+"/key4.db")
	exercise(t, tok, false)
}

func TestNSSDB(t *testing.T) {
	tok := lab.NSSDB(t)
	require.Equal(t, uint(2), tok.SlotID)
	require.Equal(t, "NSS Certificate DB", tok.Label)
	require.True(t, tok.Login)
	require.Equal(t, "", tok.PIN)
	require.Equal(t, lab.NSS(t).Dir, tok.Dir, "NSS and NSSDB share one database")
	exercise(t, tok, false)
}

// exercise opens tok, imports a key of known value, generates one, destroys
// both and checks the object count at every step.
func exercise(t *testing.T, tok *lab.Token, fresh bool) {
	ctx, sess := lab.Open(t, tok)
	n0 := lab.CountObjects(t, ctx, sess)
	if fresh {
		require.Zero(t, n0, "a fresh token holds no objects")
	}

	k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "lab-import")
	require.Equal(t, n0+1, lab.CountObjects(t, ctx, sess))
	attrs, err := ctx.GetAttributeValue(sess, k, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
	})
	require.NoError(t, err)
	require.Equal(t, []byte{0}, attrs[0].Value, "CKA_TOKEN")
	for _, a := range attrs[1:5] {
		require.Equal(t, []byte{1}, a.Value, "attribute %#x", a.Type)
	}
	require.Equal(t, "lab-import", string(attrs[5].Value))
	// The key really has the value given: known answer against crypto/aes.
	require.Equal(t, goAESBlock(t, keyValue), encryptZeroBlock(t, ctx, sess, k))

	g, err := ctx.GenerateKey(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
	})
	require.NoError(t, err)
	require.Equal(t, n0+2, lab.CountObjects(t, ctx, sess))
	require.Len(t, encryptZeroBlock(t, ctx, sess, g), 16)

	require.NoError(t, ctx.DestroyObject(sess, k))
	require.Equal(t, n0+1, lab.CountObjects(t, ctx, sess))
	require.NoError(t, ctx.DestroyObject(sess, g))
	require.Equal(t, n0, lab.CountObjects(t, ctx, sess))
}

func encryptZeroBlock(t *testing.T, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, k pkcs11.ObjectHandle) []byte {
	t.Helper()
	require.NoError(t, ctx.EncryptInit(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}, k))
	out, err := ctx.Encrypt(sess, make([]byte, 16))
	require.NoError(t, err)
	return out
}

func goAESBlock(t *testing.T, key []byte) []byte {
	t.Helper()
	c, err := aes.NewCipher(key)
	require.NoError(t, err)
	out := make([]byte, 16)
	c.Encrypt(out, make([]byte, 16))
	return out
}

func TestImportSecretKeyAttrsOverride(t *testing.T) {
	ctx, sess := lab.Open(t, lab.SoftHSM2(t))
	k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "override",
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true))
	attrs, err := ctx.GetAttributeValue(sess, k, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
	})
	require.NoError(t, err)
	require.Equal(t, []byte{0}, attrs[0].Value, "CKA_DERIVE overridden")
	require.Equal(t, []byte{1}, attrs[1].Value, "CKA_TOKEN overridden")
	require.Equal(t, []byte{1}, attrs[2].Value, "CKA_DECRYPT added")
	require.Equal(t, []byte{1}, attrs[3].Value, "CKA_ENCRYPT kept")
}

// Two SoftHSM2 tokens in one process are independent instances: each sees only
// its own token and objects.
func TestSoftHSM2TokensAreIndependent(t *testing.T) {
	a, b := lab.SoftHSM2(t), lab.SoftHSM2(t)
	require.NotEqual(t, a.Module, b.Module)
	ca, sa := lab.Open(t, a) // Open checks the label in each slot
	cb, sb := lab.Open(t, b)
	require.NotSame(t, ca, cb)

	lab.ImportSecretKey(t, ca, sa, pkcs11.CKK_AES, keyValue, "in-a", pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
	lab.ImportSecretKey(t, ca, sa, pkcs11.CKK_AES, keyValue, "in-a-session")
	require.Equal(t, 2, lab.CountObjects(t, ca, sa))
	require.Equal(t, 0, lab.CountObjects(t, cb, sb))
	require.Equal(t, []uint{a.SlotID}, slotIDs(t, ca), "instance of a has a's token only")
	require.Equal(t, []uint{b.SlotID}, slotIDs(t, cb), "instance of b has b's token only")

	// A second Open of the same token shares the instance and its objects.
	ca2, sa2 := lab.Open(t, a)
	require.Same(t, ca, ca2)
	require.Equal(t, 2, lab.CountObjects(t, ca2, sa2))
}

// slotIDs lists the slots holding an initialised token.
func slotIDs(t *testing.T, ctx *pkcs11.Ctx) []uint {
	t.Helper()
	slots, err := ctx.GetSlotList(true)
	require.NoError(t, err)
	var ids []uint
	for _, s := range slots {
		info, err := ctx.GetTokenInfo(s)
		require.NoError(t, err)
		if info.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			ids = append(ids, s)
		}
	}
	return ids
}

func TestSoftHSM2Parallel(t *testing.T) {
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			tok := lab.SoftHSM2(t)
			ctx, sess := lab.Open(t, tok)
			lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "parallel")
			require.Equal(t, 1, lab.CountObjects(t, ctx, sess))
			require.Equal(t, goAESBlock(t, keyValue), encryptZeroBlock(t, ctx, sess, findKey(t, ctx, sess, "parallel")))
		})
	}
}

func findKey(t *testing.T, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, label string) pkcs11.ObjectHandle {
	t.Helper()
	objs := findLabel(t, ctx, sess, label)
	require.Len(t, objs, 1)
	return objs[0]
}

func findLabel(t *testing.T, ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, label string) []pkcs11.ObjectHandle {
	t.Helper()
	require.NoError(t, ctx.FindObjectsInit(sess, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}))
	objs, _, err := ctx.FindObjects(sess, 100)
	require.NoError(t, err)
	require.NoError(t, ctx.FindObjectsFinal(sess))
	return objs
}

// Token.Setenv is what code under test needs to initialise a SoftHSM2 module
// by itself.
func TestSetenv(t *testing.T) {
	tok := lab.SoftHSM2(t)
	tok.Setenv(t)
	p := pkcs11.New(tok.Module)
	require.NotNil(t, p)
	defer p.Destroy()
	require.NoError(t, p.Initialize())
	defer p.Finalize()
	require.Equal(t, []uint{tok.SlotID}, slotIDs(t, p))
	info, err := p.GetTokenInfo(tok.SlotID)
	require.NoError(t, err)
	require.Equal(t, tok.Label, info.Label)
}

func mechanisms(t *testing.T, ctx *pkcs11.Ctx, slot uint) map[uint]bool {
	t.Helper()
	list, err := ctx.GetMechanismList(slot)
	require.NoError(t, err)
	m := map[uint]bool{}
	for _, x := range list {
		m[x.Mechanism] = true
	}
	return m
}

func TestHideMechanisms(t *testing.T) {
	const (
		ecb  = pkcs11.CKM_AES_ECB_ENCRYPT_DATA
		cbc  = pkcs11.CKM_AES_CBC_ENCRYPT_DATA
		des3 = pkcs11.CKM_DES3_ECB_ENCRYPT_DATA
	)
	open := func(opts ...lab.Option) (*pkcs11.Ctx, pkcs11.SessionHandle, map[uint]bool) {
		tok := lab.SoftHSM2(t, opts...)
		ctx, sess := lab.Open(t, tok)
		return ctx, sess, mechanisms(t, ctx, tok.SlotID)
	}
	// deriveRV is what C_DeriveKey with m and no parameters answers: the
	// token refuses a hidden mechanism before looking at the parameters.
	deriveRV := func(ctx *pkcs11.Ctx, sess pkcs11.SessionHandle, m uint) error {
		k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "base")
		_, err := ctx.DeriveKey(sess, []*pkcs11.Mechanism{pkcs11.NewMechanism(m, nil)}, k, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
		})
		return err
	}

	ctx, sess, all := open()
	require.True(t, all[ecb] && all[cbc] && all[des3], "SoftHSM2 has the ENCRYPT_DATA mechanisms")
	require.ErrorIs(t, deriveRV(ctx, sess, ecb), pkcs11.Error(pkcs11.CKR_MECHANISM_PARAM_INVALID))

	ctx, sess, one := open(lab.HideMechanisms("CKM_AES_ECB_ENCRYPT_DATA"))
	require.False(t, one[ecb])
	require.True(t, one[cbc])
	require.Len(t, one, len(all)-1)
	require.ErrorIs(t, deriveRV(ctx, sess, ecb), pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID))

	_, _, two := open(lab.HideMechanisms("CKM_AES_ECB_ENCRYPT_DATA", "CKM_AES_CBC_ENCRYPT_DATA"))
	require.False(t, two[ecb])
	require.False(t, two[cbc])
	require.True(t, two[des3])
	require.Len(t, two, len(all)-2)

	f := runFake(t, func(tb testing.TB) { lab.SoftHSM2(tb, lab.HideMechanisms("CKM_AES_ECB_ENCRYPT_DAT")) })
	require.True(t, f.failed)
	require.Contains(t, f.msg, `unknown mechanism name "CKM_AES_ECB_ENCRYPT_DAT"`)
}

// What the package doc says about the NSS slots and login.
func TestNSSSlotsAndLogin(t *testing.T) {
	crypto, db := lab.NSS(t), lab.NSSDB(t)
	require.Equal(t, crypto.Module, db.Module)
	require.Equal(t, crypto.InitArgs, db.InitArgs)
	ctx, sess := lab.Open(t, crypto)
	require.True(t, mechanisms(t, ctx, crypto.SlotID)[pkcs11.CKM_AES_ECB_ENCRYPT_DATA])
	require.False(t, mechanisms(t, ctx, db.SlotID)[pkcs11.CKM_AES_ECB_ENCRYPT_DATA])

	require.ErrorIs(t, ctx.Login(sess, pkcs11.CKU_USER, ""), pkcs11.Error(pkcs11.CKR_USER_TYPE_INVALID))
	_, err := ctx.CreateObject(sess, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, keyValue),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
	})
	require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_TOKEN_WRITE_PROTECTED))

	ctx2, dbSess := lab.Open(t, db) // logged in with ""
	require.Same(t, ctx, ctx2)
	require.NoError(t, ctx.Login(dbSess, pkcs11.CKU_USER, ""), "NSS never answers CKR_USER_ALREADY_LOGGED_IN")
	info, err := ctx.GetSessionInfo(dbSess)
	require.NoError(t, err)
	require.Equal(t, uint(pkcs11.CKS_RW_PUBLIC_SESSION), info.State)
}

// Token objects made in this process are seen by another process that opens
// the token from its Token description (Module, InitArgs, SlotID, PIN, Env).
func TestTokenObjectsCrossProcesses(t *testing.T) {
	for _, tok := range []*lab.Token{lab.SoftHSM2(t), lab.NSSDB(t)} {
		t.Run(tok.Kind, func(t *testing.T) {
			ctx, sess := lab.Open(t, tok)
			label := lab.UniqueLabel(t.Name())
			n0 := lab.CountObjects(t, ctx, sess)
			k := lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, label, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
			require.Equal(t, 1, countInChild(t, tok, label))
			require.NoError(t, ctx.DestroyObject(sess, k))
			require.Equal(t, 0, countInChild(t, tok, label))
			require.Equal(t, n0, lab.CountObjects(t, ctx, sess))
		})
	}
}

const (
	helperTokenEnv  = "LAB_TEST_HELPER_TOKEN"
	helperLabelEnv  = "LAB_TEST_HELPER_LABEL"
	helperSharedEnv = "LAB_TEST_HELPER_SHARED"
)

var helperFound = regexp.MustCompile(`lab-helper-found=([0-9]+)`)

// countInChild runs TestLabHelperProcess in a new process, with tok.Env in its
// environment, and returns how many objects labelled label it found.
func countInChild(t *testing.T, tok *lab.Token, label string) int {
	t.Helper()
	js, err := json.Marshal(tok)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLabHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(childEnv(), helperTokenEnv+"="+string(js), helperLabelEnv+"="+label)
	cmd.Env = append(cmd.Env, tok.Env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	m := helperFound.FindSubmatch(out)
	require.NotNil(t, m, "%s", out)
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return n
}

// childEnv is the environment of a child test binary: without the race
// detector's one-second sleep at exit.
func childEnv() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// TestLabHelperProcess is the child of countInChild and TestMainCleansUp; run
// directly, it does nothing.
func TestLabHelperProcess(t *testing.T) {
	if os.Getenv(helperSharedEnv) != "" {
		for _, tok := range []*lab.Token{lab.SharedSoftHSM2(t), lab.NSS(t)} {
			lab.Open(t, tok)
			fmt.Printf("lab-helper-dir=%s\n", tok.Dir)
		}
		return
	}
	js := os.Getenv(helperTokenEnv)
	if js == "" {
		return
	}
	var tok lab.Token
	require.NoError(t, json.Unmarshal([]byte(js), &tok))
	tok.Env = nil // the process environment must be enough
	ctx, sess := lab.Open(t, &tok)
	fmt.Printf("lab-helper-found=%d\n", len(findLabel(t, ctx, sess, os.Getenv(helperLabelEnv))))
}

// Main removes the directories of the shared tokens when the tests end.
func TestMainCleansUp(t *testing.T) {
	if os.Getenv(lab.SkipEnv) == "1" {
		t.Skipf("%s=1", lab.SkipEnv) // the child would skip too
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLabHelperProcess$", "-test.v", "-test.count=1")
	cmd.Env = append(childEnv(), helperSharedEnv+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	dirs := regexp.MustCompile(`lab-helper-dir=(\S+)`).FindAllSubmatch(out, -1)
	require.Len(t, dirs, 2, "%s", out)
	for _, d := range dirs {
		require.NoDirExists(t, string(d[1]))
	}
}

func TestSharedSoftHSM2(t *testing.T) {
	tok := lab.SharedSoftHSM2(t)
	require.Equal(t, tok, lab.SharedSoftHSM2(t), "one token per test binary")
	require.Equal(t, []string{"SOFTHSM2_CONF=" + os.Getenv("SOFTHSM2_CONF")}, tok.Env, "its configuration is in the process environment")
	require.DirExists(t, tok.Dir)

	// Code under test can initialise the module by itself.
	p := pkcs11.New(tok.Module)
	require.NotNil(t, p)
	defer p.Destroy()
	err := p.Initialize()
	if err != nil {
		require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED))
	}
	require.Equal(t, []uint{tok.SlotID}, slotIDs(t, p))

	// Open does not finalise the shared module when its session closes.
	t.Run("open", func(t *testing.T) {
		ctx, sess := lab.Open(t, tok)
		lab.ImportSecretKey(t, ctx, sess, pkcs11.CKK_AES, keyValue, "shared")
		require.Equal(t, 1, lab.CountObjects(t, ctx, sess))
	})
	require.Equal(t, []uint{tok.SlotID}, slotIDs(t, p), "still initialised")
	sess, err := p.OpenSession(tok.SlotID, pkcs11.CKF_SERIAL_SESSION)
	require.NoError(t, err)
	defer p.CloseSession(sess)
	require.NoError(t, p.Login(sess, pkcs11.CKU_USER, tok.PIN))
	require.Zero(t, lab.CountObjects(t, p, sess), "the session objects went with their session")
}

// Open fails when the slot does not hold the token it expects: that is what
// happens when a module was initialised with another configuration.
func TestOpenChecksLabel(t *testing.T) {
	tok := *lab.SoftHSM2(t)
	tok.Label = "another-token"
	f := runFake(t, func(tb testing.TB) { lab.Open(tb, &tok) })
	require.True(t, f.failed)
	require.Contains(t, f.msg, `holds token "p11derive-lab", want "another-token"`)
}

func TestMissingToolFailsNamingPackage(t *testing.T) {
	t.Setenv(lab.SkipEnv, "")
	t.Setenv("PATH", t.TempDir())
	f := runFake(t, func(tb testing.TB) { lab.SoftHSM2(tb) })
	require.True(t, f.failed, "a missing tool must fail, not skip")
	require.Contains(t, f.msg, "softhsm2-util not found: install the Debian package softhsm2")

	f = runFake(t, func(tb testing.TB) { lab.NSS(tb) })
	require.True(t, f.failed, "a missing tool must fail, not skip")
	require.Contains(t, f.msg, "certutil not found: install the Debian package libnss3-tools")
}

func TestSkipEnv(t *testing.T) {
	t.Setenv(lab.SkipEnv, "1")
	for _, mk := range []func(testing.TB){
		func(tb testing.TB) { lab.SoftHSM2(tb) },
		func(tb testing.TB) { lab.NSS(tb) },
		func(tb testing.TB) { lab.NSSDB(tb) },
	} {
		f := runFake(t, mk)
		require.True(t, f.skipped)
		require.False(t, f.failed)
	}
}

// fakeTB records Fatalf and Skipf instead of ending the test; everything else
// goes to the real test.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFake runs fn with a fakeTB in its own goroutine (Fatalf ends it).
func runFake(t *testing.T, fn func(testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

// TestNSSDBInstance: an NSS instance of its own holds its own objects (a
// token object in its database), apart from the process's shared NSS
// database, both in use at once.
func TestNSSDBInstance(t *testing.T) {
	sctx, ss := lab.Open(t, lab.NSSDB(t))
	octx, osess := lab.Open(t, lab.NSSDBInstance(t))
	label := lab.UniqueLabel("instance")
	n := lab.CountObjects(t, sctx, ss)
	k := lab.ImportSecretKey(t, octx, osess, pkcs11.CKK_AES, make([]byte, 16), label, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true))
	require.Equal(t, n, lab.CountObjects(t, sctx, ss), "the shared database does not see the instance's key")
	require.Len(t, findLabel(t, octx, osess, label), 1)
	require.Empty(t, findLabel(t, sctx, ss, label))
	require.NoError(t, octx.DestroyObject(osess, k))
}
