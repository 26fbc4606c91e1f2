package ck

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/cabi"
	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/mechanisms"
)

func TestMain(m *testing.M) { lab.Main(m) }

// keyValue is the known AES key the tests import.
var keyValue = []byte{0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f}

// data is a block of derivation data.
var data = []byte("0123456789abcdef")

// ulong is the size of a C unsigned long (CK_ULONG) on this platform.
const ulong = int(unsafe.Sizeof(uint(0)))

// ---------------------------------------------------------------------------
// Layout: every declaration of ck.h against <pkcs11.h>.

func fields(fs []cabi.Field) []cField {
	out := make([]cField, len(fs))
	for i, f := range fs {
		out[i] = cField{Name: f.Name, Offset: f.Offset, Size: f.Size}
	}
	return out
}

// TestLayoutMatchesPKCS11 compares ck.h with the NSS <pkcs11.h>: size and
// alignment of CK_ATTRIBUTE, CK_MECHANISM, CK_VERSION, CK_FUNCTION_LIST,
// CK_INFO, CK_SLOT_INFO, CK_TOKEN_INFO, CK_SESSION_INFO, CK_MECHANISM_INFO
// and CK_C_INITIALIZE_ARGS,
// and every member, in order, at the same offset with the same size. For the
// function list that is all 68 function pointers by name, so every function
// ck calls sits where the real structure has it, and nothing is missing
// (the sizes match too).
func TestLayoutMatchesPKCS11(t *testing.T) {
	mine := cLayout()
	real := cabi.CallStructs()
	real["CK_ATTRIBUTE"] = cabi.Structs()["CK_ATTRIBUTE"]
	for ckName, cName := range map[string]string{
		"ck_attribute":      "CK_ATTRIBUTE",
		"ck_mechanism":      "CK_MECHANISM",
		"ck_version":        "CK_VERSION",
		"ck_function_list":  "CK_FUNCTION_LIST",
		"ck_info":           "CK_INFO",
		"ck_slot_info":      "CK_SLOT_INFO",
		"ck_token_info":     "CK_TOKEN_INFO",
		"ck_session_info":   "CK_SESSION_INFO",
		"ck_mechanism_info": "CK_MECHANISM_INFO",
	} {
		m, ok := mine[ckName]
		require.True(t, ok, ckName)
		r, ok := real[cName]
		require.True(t, ok, cName)
		require.Equal(t, r.Size, m.Size, "sizeof(%s)", cName)
		require.Equal(t, r.Align, m.Align, "alignof(%s)", cName)
		require.Equal(t, fields(r.Fields), m.Fields, "members of %s", cName)
	}
	// CK_C_INITIALIZE_ARGS: NSS's header has a member the standard does not,
	// LibraryParameters, between flags and pReserved, where NSS softoken
	// reads its configuration. ck declares the standard structure, whose
	// pReserved sits where NSS's LibraryParameters is: what every module
	// reads as pReserved, NSS reads as its parameters.
	ia, nia := mine["ck_c_initialize_args"], real["CK_C_INITIALIZE_ARGS"]
	require.Len(t, ia.Fields, 6)
	require.Len(t, nia.Fields, 7)
	require.Equal(t, fields(nia.Fields[:5]), ia.Fields[:5], "CreateMutex … flags")
	require.Equal(t, "LibraryParameters", nia.Fields[5].Name)
	require.Equal(t, nia.Fields[5].Offset, ia.Fields[5].Offset, "pReserved where NSS reads LibraryParameters")
	require.Equal(t, nia.Size-nia.Fields[6].Size, ia.Size, "the standard structure, one pointer short of NSS's")

	fl := mine["ck_function_list"]
	require.Len(t, fl.Fields, 1+68)
	seen := map[string]bool{}
	for _, f := range fl.Fields {
		require.False(t, seen[f.Name], "%s listed twice", f.Name)
		seen[f.Name] = true
	}
	for _, fn := range []string{"C_DestroyObject", "C_GetAttributeValue", "C_EncryptInit", "C_Encrypt", "C_SignInit", "C_Sign", "C_UnwrapKey", "C_DeriveKey"} {
		require.True(t, seen[fn], fn)
	}
}

func TestConstantsMatchPKCS11(t *testing.T) {
	real := cabi.CallConstants()
	for name, v := range cConstants() {
		require.Equal(t, real[name], v, name)
	}
	require.Equal(t, real["CK_UNAVAILABLE_INFORMATION"], uint64(unavailable))
	require.Equal(t, real["CKR_ARGUMENTS_BAD"], uint64(rvArgumentsBad))
	require.EqualValues(t, real["CKR_ATTRIBUTE_SENSITIVE"], pkcs11.CKR_ATTRIBUTE_SENSITIVE)
	require.EqualValues(t, real["CKR_ATTRIBUTE_TYPE_INVALID"], pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)
	require.EqualValues(t, real["CKR_BUFFER_TOO_SMALL"], pkcs11.CKR_BUFFER_TOO_SMALL)
	// Handles, types and lengths travel as Go uint: as wide as CK_ULONG.
	require.Equal(t, uintptr(ulongSize), cabi.Structs()["CK_ATTRIBUTE"].Fields[0].Size)
	require.Equal(t, ulong, ulongSize)
}

// ---------------------------------------------------------------------------
// Helpers.

// tokens are the real tokens the package is tested on.
var tokens = []struct {
	name string
	make func(testing.TB) *lab.Token
}{
	{"softhsm2", lab.SharedSoftHSM2},
	{"nss", lab.NSS},
}

func forEachToken(t *testing.T, f func(t *testing.T, tok *lab.Token)) {
	for _, tk := range tokens {
		t.Run(tk.name, func(t *testing.T) { f(t, tk.make(t)) })
	}
}

// env is a session on a lab token, through miekg and through ck.
type env struct {
	tok  *lab.Token
	ctx  *pkcs11.Ctx
	sess uint
	m    *Module
}

func open(tb testing.TB, tok *lab.Token) *env {
	tb.Helper()
	ctx, sess := lab.Open(tb, tok)
	m, err := Open(tok.Module, tok.InitArgs)
	require.NoError(tb, err)
	return &env{tok: tok, ctx: ctx, sess: uint(sess), m: m}
}

func (e *env) importAES(tb testing.TB, value []byte, label string, attrs ...*pkcs11.Attribute) uint {
	tb.Helper()
	return uint(lab.ImportSecretKey(tb, e.ctx, pkcs11.SessionHandle(e.sess), pkcs11.CKK_AES, value, label, attrs...))
}

func (e *env) destroy(tb testing.TB, h uint) {
	tb.Helper()
	requireOK(tb, e.m.DestroyObject(e.sess, h), "C_DestroyObject")
}

func requireOK(tb testing.TB, rv uint, what string) {
	tb.Helper()
	if rv != pkcs11.CKR_OK {
		tb.Fatalf("%s: %v", what, pkcs11.Error(rv))
	}
}

func requireRV(tb testing.TB, want, got uint, what string) {
	tb.Helper()
	if got != want {
		tb.Fatalf("%s: got %v, want %v", what, pkcs11.Error(got), pkcs11.Error(want))
	}
}

// cbcMAC is the AES CBC-MAC of in (a multiple of 16 bytes), zero IV.
func cbcMAC(tb testing.TB, key, in []byte) []byte {
	tb.Helper()
	c, err := aes.NewCipher(key)
	require.NoError(tb, err)
	out := make([]byte, len(in))
	cipher.NewCBCEncrypter(c, make([]byte, 16)).CryptBlocks(out, in)
	return out[len(out)-16:]
}

// checkValue is E_k(0^16) computed in the token through ck: EncryptInit
// (CKM_AES_ECB) and one Encrypt into a one-block buffer.
func (e *env) checkValue(tb testing.TB, k uint) []byte {
	tb.Helper()
	requireOK(tb, e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, k), "C_EncryptInit")
	out := make([]byte, 16)
	n, rv := e.m.Encrypt(e.sess, make([]byte, 16), out)
	requireOK(tb, rv, "C_Encrypt")
	require.Equal(tb, 16, n)
	return out
}

func ulongBytes(v uint) []byte {
	b := make([]byte, ulong)
	if ulong == 8 {
		binary.NativeEndian.PutUint64(b, uint64(v))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(v))
	}
	return b
}

// keyTemplate is the template of a derived AES-128 session key: usable for
// encryption (for its check value), sensitive, not extractable.
func keyTemplate(label string) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
}

// template13 is a 13-attribute derivation template, the size p11derive uses.
func template13() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11derive-ck-bench"),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
	}
}

// withParam runs fn with the C bytes of mechanism's parameter p, made by
// package mechanisms (valid during fn only).
func withParam(tb testing.TB, mechanism uint, p mechanisms.Params, fn func(param []byte)) {
	tb.Helper()
	err := mechanisms.Call(mechanism, p, func(m []*pkcs11.Mechanism) error {
		fn(m[0].Parameter)
		return nil
	})
	require.NoError(tb, err)
}

// deriveECB derives AES_base(d) with CKM_AES_ECB_ENCRYPT_DATA through ck.
func (e *env) deriveECB(tb testing.TB, base uint, d []byte, template []*pkcs11.Attribute) (h, rv uint) {
	tb.Helper()
	withParam(tb, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: d}, func(param []byte) {
		h, rv = e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, param, base, template)
	})
	return h, rv
}

// ---------------------------------------------------------------------------
// Calls on real tokens.

func TestDeriveKey(t *testing.T) {
	forEachToken(t, func(t *testing.T, tok *lab.Token) {
		e := open(t, tok)
		k := e.importAES(t, keyValue, "ck-derive-base")
		for _, tmpl := range [][]*pkcs11.Attribute{keyTemplate("ck-derived"), template13()} {
			dk, rv := e.deriveECB(t, k, data, tmpl)
			requireOK(t, rv, "C_DeriveKey")
			require.NotZero(t, dk)
			want := lab.AESBlock(t, lab.AESBlock(t, keyValue, data), make([]byte, 16))
			require.Equal(t, want, e.checkValue(t, dk), "DK = AES_K(data)")
			e.destroy(t, dk)
			require.NotEqual(t, uint(pkcs11.CKR_OK), e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, dk), "DK is gone")
		}

		// A template longer than the stack buffer goes through the heap.
		long := strings.Repeat("L", 3000)
		require.Greater(t, templateWords(keyTemplate(long)), stackWords)
		dk, rv := e.deriveECB(t, k, data, keyTemplate(long))
		requireOK(t, rv, "C_DeriveKey with a long label")
		vals, rv := e.m.GetAttributeValue(e.sess, dk, []uint{pkcs11.CKA_LABEL}, []int{4096})
		requireOK(t, rv, "C_GetAttributeValue")
		require.Equal(t, long, string(vals[0]))
		e.destroy(t, dk)

		// The token's own refusal comes back as rv, with no handle.
		dk, rv = e.deriveECB(t, k, data[:5], keyTemplate("ck-bad"))
		require.NotEqual(t, uint(pkcs11.CKR_OK), rv, "5 bytes of data are not a block")
		require.Zero(t, dk)
		e.destroy(t, k)
	})
}

func TestGetAttributeValue(t *testing.T) {
	types := []uint{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_LABEL}
	maxLen := []int{1, 1, ulong, ulong, 256}
	forEachToken(t, func(t *testing.T, tok *lab.Token) {
		e := open(t, tok)
		k := e.importAES(t, keyValue, "ck-attrs-base")
		dk, rv := e.deriveECB(t, k, data, keyTemplate("ck-attrs-dk"))
		requireOK(t, rv, "C_DeriveKey")

		vals, rv := e.m.GetAttributeValue(e.sess, dk, types, maxLen)
		requireOK(t, rv, "C_GetAttributeValue")
		require.Equal(t, [][]byte{{1}, {0}, ulongBytes(pkcs11.CKK_AES), ulongBytes(16), []byte("ck-attrs-dk")}, vals)
		// The same as miekg reads.
		tmpl := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			tmpl[i] = pkcs11.NewAttribute(ty, nil)
		}
		got, err := e.ctx.GetAttributeValue(pkcs11.SessionHandle(e.sess), pkcs11.ObjectHandle(dk), tmpl)
		require.NoError(t, err)
		for i := range got {
			require.Equal(t, got[i].Value, vals[i], "attribute %#x", types[i])
		}
		// Values have their own capacity: appending to one leaves the next alone.
		_ = append(vals[0], 0xff)
		require.Equal(t, []byte{0}, vals[1])

		// CKA_VALUE of a sensitive key: unavailable, the rest still read.
		vals, rv = e.m.GetAttributeValue(e.sess, dk, []uint{pkcs11.CKA_VALUE, pkcs11.CKA_KEY_TYPE}, []int{32, ulong})
		requireRV(t, pkcs11.CKR_ATTRIBUTE_SENSITIVE, rv, "CKA_VALUE of a sensitive key")
		require.Nil(t, vals[0])
		require.Equal(t, ulongBytes(pkcs11.CKK_AES), vals[1])

		// A label longer than the room given: CKR_BUFFER_TOO_SMALL for it.
		// SoftHSM2 copies nothing and says so. NSS copies all 11 bytes of
		// "ck-attrs-dk" into the 8-byte slot of the label, 3 of them into
		// the slot of CKA_VALUE_LEN, and answers CKR_OK: ck reports
		// CKR_BUFFER_TOO_SMALL, and no value for either.
		vals, rv = e.m.GetAttributeValue(e.sess, dk, []uint{pkcs11.CKA_LABEL, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_KEY_TYPE}, []int{3, ulong, ulong})
		requireRV(t, pkcs11.CKR_BUFFER_TOO_SMALL, rv, "CKA_LABEL in 3 bytes")
		require.Nil(t, vals[0])
		if tok.Kind == lab.KindNSS {
			require.Nil(t, vals[1], "overwritten by NSS")
		} else {
			require.Equal(t, ulongBytes(16), vals[1])
		}
		require.Equal(t, ulongBytes(pkcs11.CKK_AES), vals[2])
		// A CK_ULONG given 1 byte: its slot holds a whole CK_ULONG, so NSS's
		// overlong copy stays inside it.
		vals, rv = e.m.GetAttributeValue(e.sess, dk, []uint{pkcs11.CKA_KEY_TYPE, pkcs11.CKA_SENSITIVE}, []int{1, 1})
		requireRV(t, pkcs11.CKR_BUFFER_TOO_SMALL, rv, "CKA_KEY_TYPE in 1 byte")
		require.Equal(t, [][]byte{nil, {1}}, vals)

		// An empty label is an empty value, not an unavailable one.
		ek := e.importAES(t, keyValue, "")
		vals, rv = e.m.GetAttributeValue(e.sess, ek, []uint{pkcs11.CKA_LABEL}, []int{256})
		requireOK(t, rv, "C_GetAttributeValue of an empty label")
		require.NotNil(t, vals[0])
		require.Empty(t, vals[0])
		e.destroy(t, ek)

		// A DES3 key has no CKA_VALUE_LEN: unavailable, the others filled.
		des3 := append(append(bytes.Repeat([]byte{0x01}, 8), bytes.Repeat([]byte{0x02}, 8)...), bytes.Repeat([]byte{0x04}, 8)...)
		d3 := uint(lab.ImportSecretKey(t, e.ctx, pkcs11.SessionHandle(e.sess), pkcs11.CKK_DES3, des3, "ck-attrs-des3"))
		vals, rv = e.m.GetAttributeValue(e.sess, d3, types, maxLen)
		requireRV(t, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, rv, "CKA_VALUE_LEN of a DES3 key")
		require.Len(t, vals, 5)
		require.Nil(t, vals[3], "CKA_VALUE_LEN")
		require.Len(t, vals[0], 1, "CKA_SENSITIVE")
		require.Len(t, vals[1], 1, "CKA_EXTRACTABLE")
		require.Equal(t, ulongBytes(pkcs11.CKK_DES3), vals[2])
		require.Equal(t, []byte("ck-attrs-des3"), vals[4])
		// miekg cannot read them in one go: it fails the whole call.
		_, err = e.ctx.GetAttributeValue(pkcs11.SessionHandle(e.sess), pkcs11.ObjectHandle(d3), tmpl)
		require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_TYPE_INVALID))

		// Any other failure: no values.
		for _, h := range []uint{d3, dk, k} {
			e.destroy(t, h)
		}
		vals, rv = e.m.GetAttributeValue(e.sess, dk, types, maxLen)
		require.Nil(t, vals)
		require.Contains(t, []uint{pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID}, rv, "%v", pkcs11.Error(rv))
	})
}

// NSS copies a session object's attribute whatever room it is given. When
// the copy runs past the end of ck's buffer, Go memory is corrupted and
// GetAttributeValue panics. testSlack puts real, unused memory after the
// buffer, so that this test corrupts nothing.
func TestGetAttributeValuePanicsOnOverflowNSS(t *testing.T) {
	e := open(t, lab.NSS(t))
	k := e.importAES(t, keyValue, "ck-overflow-label") // 17 bytes
	defer e.destroy(t, k)
	testSlack = 8
	defer func() { testSlack = 0 }()
	require.PanicsWithValue(t,
		"ck: C_GetAttributeValue of "+e.tok.Module+" wrote 17 bytes of attribute 0x3 into 3 bytes of room, past the end of the buffer: memory is corrupted (give maxLen an upper bound)",
		func() { e.m.GetAttributeValue(e.sess, k, []uint{pkcs11.CKA_LABEL}, []int{3}) })
}

// CKM_AES_MAC_GENERAL on NSS, against a CBC-MAC computed by crypto/aes.
func TestSignMACGeneralNSS(t *testing.T) {
	e := open(t, lab.NSS(t))
	k := e.importAES(t, keyValue, "ck-mac")
	in := append(bytes.Clone(data), make([]byte, 16)...)
	withParam(t, pkcs11.CKM_AES_MAC_GENERAL, mechanisms.MACGeneralParams(16), func(param []byte) {
		for _, size := range []int{16, 8} {
			// MAC sizes come from the parameter; out has room for 16.
			p := param
			if size != 16 {
				p = ulongBytes(uint(size))
			}
			requireOK(t, e.m.SignInit(e.sess, pkcs11.CKM_AES_MAC_GENERAL, p, k), "C_SignInit")
			out := make([]byte, 16)
			n, rv := e.m.Sign(e.sess, in, out)
			requireOK(t, rv, "C_Sign")
			require.Equal(t, size, n)
			require.Equal(t, cbcMAC(t, keyValue, in)[:size], out[:n])
		}

		// A length query keeps the operation intact.
		requireOK(t, e.m.SignInit(e.sess, pkcs11.CKM_AES_MAC_GENERAL, param, k), "C_SignInit")
		n, rv := e.m.Sign(e.sess, in, nil)
		requireOK(t, rv, "C_Sign length query")
		require.Equal(t, 16, n)
		out := make([]byte, 16)
		n, rv = e.m.Sign(e.sess, in, out)
		requireOK(t, rv, "C_Sign")
		require.Equal(t, cbcMAC(t, keyValue, in), out[:n])

		// Too small a buffer: CKR_BUFFER_TOO_SMALL with the length needed,
		// and the operation stays, but NSS has already MACed the input:
		// the retry returns the MAC of in||in, with CKR_OK.
		requireOK(t, e.m.SignInit(e.sess, pkcs11.CKM_AES_MAC_GENERAL, param, k), "C_SignInit")
		n, rv = e.m.Sign(e.sess, in, make([]byte, 4))
		requireRV(t, pkcs11.CKR_BUFFER_TOO_SMALL, rv, "C_Sign into 4 bytes")
		require.Equal(t, 16, n)
		n, rv = e.m.Sign(e.sess, in, out)
		requireOK(t, rv, "C_Sign retried")
		require.Equal(t, cbcMAC(t, keyValue, append(bytes.Clone(in), in...)), out[:n], "NSS MACs the input twice")
	})
	e.destroy(t, k)
}

// NSS unwraps AES keys with CKM_AES_ECB (SoftHSM2 does not): the unwrapped
// key is D_K(wrapped), checked by its check value.
func TestUnwrapKeyNSS(t *testing.T) {
	e := open(t, lab.NSS(t))
	k := e.importAES(t, keyValue, "ck-kek")
	value := make([]byte, 16)
	_, _ = rand.Read(value)
	c, err := aes.NewCipher(keyValue)
	require.NoError(t, err)
	wrapped := make([]byte, 16)
	c.Encrypt(wrapped, value)

	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "ck-unwrapped"),
	}
	h, rv := e.m.UnwrapKey(e.sess, pkcs11.CKM_AES_ECB, nil, k, wrapped, tmpl)
	requireOK(t, rv, "C_UnwrapKey")
	require.Equal(t, lab.AESBlock(t, value, make([]byte, 16)), e.checkValue(t, h))
	e.destroy(t, h)

	_, rv = e.m.UnwrapKey(e.sess, pkcs11.CKM_AES_ECB, nil, k, wrapped[:5], tmpl)
	require.NotEqual(t, uint(pkcs11.CKR_OK), rv, "5 bytes are not a wrapped AES key")
	e.destroy(t, k)
}

func TestEncrypt(t *testing.T) {
	forEachToken(t, func(t *testing.T, tok *lab.Token) {
		e := open(t, tok)
		k := e.importAES(t, keyValue, "ck-encrypt")
		require.Equal(t, lab.AESBlock(t, keyValue, make([]byte, 16)), e.checkValue(t, k))

		// A length query (empty out) keeps the operation. NSS answers an
		// upper bound (48 for one block), SoftHSM2 the exact length.
		requireOK(t, e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, k), "C_EncryptInit")
		n, rv := e.m.Encrypt(e.sess, data, nil)
		requireOK(t, rv, "C_Encrypt length query")
		require.GreaterOrEqual(t, n, 16)
		t.Logf("length query for one AES-ECB block: %d", n)
		out := make([]byte, 16)
		n, rv = e.m.Encrypt(e.sess, data, out)
		requireOK(t, rv, "C_Encrypt")
		require.Equal(t, lab.AESBlock(t, keyValue, data), out[:n])

		// Too small a buffer. SoftHSM2 follows the spec: the length needed,
		// and the operation stays for the retry. NSS leaves the length
		// alone and ends the operation.
		requireOK(t, e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, k), "C_EncryptInit")
		n, rv = e.m.Encrypt(e.sess, data, make([]byte, 8))
		requireRV(t, pkcs11.CKR_BUFFER_TOO_SMALL, rv, "C_Encrypt into 8 bytes")
		n2, rv := e.m.Encrypt(e.sess, data, out)
		if tok.Kind == lab.KindNSS {
			require.Equal(t, 8, n, "NSS does not say how long")
			requireRV(t, pkcs11.CKR_OPERATION_NOT_INITIALIZED, rv, "NSS: C_Encrypt retried")
		} else {
			require.Equal(t, 16, n)
			requireOK(t, rv, "C_Encrypt retried")
			require.Equal(t, lab.AESBlock(t, keyValue, data), out[:n2])
		}

		// Encrypt without EncryptInit.
		_, rv = e.m.Encrypt(e.sess, data, out)
		requireRV(t, pkcs11.CKR_OPERATION_NOT_INITIALIZED, rv, "C_Encrypt without C_EncryptInit")
		e.destroy(t, k)
	})
}

// Arguments ck refuses itself answer CKR_ARGUMENTS_BAD without reaching
// the token (the forwarder counts no call).
func TestBadArguments(t *testing.T) {
	ft := fwd.Wrap(t, lab.NSS(t), fwd.Config{})
	e := open(t, ft)
	k := e.importAES(t, keyValue, "ck-bad-args")
	fwd.Configure(t, ft, fwd.Config{})

	tooLong := make([]*pkcs11.Attribute, MaxAttributes+1)
	for i := range tooLong {
		tooLong[i] = pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)
	}
	_, rv := e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, nil, k, tooLong)
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "65 attributes")
	_, rv = e.m.UnwrapKey(e.sess, pkcs11.CKM_AES_ECB, nil, k, data, tooLong)
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "65 attributes")
	_, rv = e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, nil, k, []*pkcs11.Attribute{nil})
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "nil attribute")
	_, rv = e.m.GetAttributeValue(e.sess, k, []uint{pkcs11.CKA_LABEL}, nil)
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "types and maxLen of different lengths")
	_, rv = e.m.GetAttributeValue(e.sess, k, []uint{pkcs11.CKA_LABEL}, []int{-1})
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "negative maxLen")
	_, rv = e.m.GetAttributeValue(e.sess, k, make([]uint, MaxAttributes+1), make([]int, MaxAttributes+1))
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "65 attributes")
	for _, fn := range []string{"C_DeriveKey", "C_UnwrapKey", "C_GetAttributeValue"} {
		require.Zero(t, fwd.Calls(t, ft, fn), fn)
	}

	// Exactly MaxAttributes is fine.
	room := make([]int, MaxAttributes)
	for i := range room {
		room[i] = ulong
	}
	vals, rv := e.m.GetAttributeValue(e.sess, k, make([]uint, MaxAttributes), room) // CKA_CLASS
	requireOK(t, rv, "64 attributes")
	require.Equal(t, ulongBytes(pkcs11.CKO_SECRET_KEY), vals[63])
	require.Equal(t, 1, fwd.Calls(t, ft, "C_GetAttributeValue"))

	var zero Module
	requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, zero.DestroyObject(e.sess, k), "zero Module")
	e.destroy(t, k)
}

func TestOpen(t *testing.T) {
	_, err := Open("/nonexistent/libnothing.so", "")
	require.ErrorContains(t, err, "dlopen")
	var le *LoadError
	require.ErrorAs(t, err, &le)
	_, err = Open("/etc/passwd", "")
	require.ErrorContains(t, err, "dlopen")
	_, err = Open("", "")
	require.Error(t, err)
	_, err = Open("a\x00b", "")
	require.Error(t, err)

	e := open(t, lab.NSS(t))
	_, err = Open(e.tok.Module, "a\x00b")
	require.Error(t, err)
	// Already initialised (by lab.Open, through miekg): accepted.
	m2, err := Open(e.tok.Module, e.tok.InitArgs)
	require.NoError(t, err)
	require.Equal(t, e.m.f, m2.f, "the same instance, the same function list")
	major, _ := e.m.Version()
	require.GreaterOrEqual(t, major, uint8(2))
	require.Equal(t, e.tok.Module, e.m.Path())
}

// The point of ck: one PKCS#11 call per operation. miekg makes two for
// C_GetAttributeValue, C_Encrypt and C_Sign.
func TestOneCallEach(t *testing.T) {
	forEachToken(t, func(t *testing.T, real *lab.Token) {
		ft := fwd.Wrap(t, real, fwd.Config{})
		e := open(t, ft)
		k := e.importAES(t, keyValue, "ck-calls")
		calls := func(fn string) int { return fwd.Calls(t, ft, fn) }
		reset := func() { fwd.Configure(t, ft, fwd.Config{}) }

		reset()
		dk, rv := e.deriveECB(t, k, data, template13())
		requireOK(t, rv, "C_DeriveKey")
		require.Equal(t, 1, calls("C_DeriveKey"))

		types := []uint{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_LABEL}
		_, rv = e.m.GetAttributeValue(e.sess, dk, types, []int{1, 1, ulong, ulong, 256})
		requireOK(t, rv, "C_GetAttributeValue")
		require.Equal(t, 1, calls("C_GetAttributeValue"))

		e.checkValue(t, dk)
		require.Equal(t, 1, calls("C_EncryptInit"))
		require.Equal(t, 1, calls("C_Encrypt"))

		e.destroy(t, dk)
		require.Equal(t, 1, calls("C_DestroyObject"))

		if real.Kind == lab.KindNSS {
			withParam(t, pkcs11.CKM_AES_MAC_GENERAL, mechanisms.MACGeneralParams(16), func(param []byte) {
				requireOK(t, e.m.SignInit(e.sess, pkcs11.CKM_AES_MAC_GENERAL, param, k), "C_SignInit")
				_, rv := e.m.Sign(e.sess, data, make([]byte, 16))
				requireOK(t, rv, "C_Sign")
			})
		} else {
			requireOK(t, e.m.SignInit(e.sess, pkcs11.CKM_AES_CMAC, nil, k), "C_SignInit")
			_, rv := e.m.Sign(e.sess, data, make([]byte, 16))
			requireOK(t, rv, "C_Sign")
		}
		require.Equal(t, 1, calls("C_SignInit"))
		require.Equal(t, 1, calls("C_Sign"))

		// miekg, for comparison.
		reset()
		tmpl := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			tmpl[i] = pkcs11.NewAttribute(ty, nil)
		}
		_, err := e.ctx.GetAttributeValue(pkcs11.SessionHandle(e.sess), pkcs11.ObjectHandle(k), tmpl)
		require.NoError(t, err)
		require.Equal(t, 2, calls("C_GetAttributeValue"), "miekg: a length query, then the values")
		e.destroy(t, k)
	})
}

// Many goroutines, each on its own session, derive, read and check keys
// while the garbage collector runs: the Go buffers handed to C (on the
// goroutine stack or the heap) stay in place during each call.
func TestConcurrentWithGC(t *testing.T) {
	forEachToken(t, func(t *testing.T, tok *lab.Token) {
		const workers, rounds = 8, 100
		base := open(t, tok)
		k := base.importAES(t, keyValue, "ck-concurrent")
		envs := make([]*env, workers)
		for i := range envs {
			envs[i] = open(t, tok)
		}
		stop := make(chan struct{})
		var gc sync.WaitGroup
		gc.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					runtime.GC()
					_ = make([]byte, 1<<16)
				}
			}
		})
		var wg sync.WaitGroup
		errs := make(chan string, workers)
		for w, e := range envs {
			wg.Go(func() {
				for i := range rounds {
					d := bytes.Repeat([]byte{byte(w), byte(i)}, 8)
					label := strings.Repeat("x", (w*rounds+i)%700) // some beyond the stack buffer
					var dk, rv uint
					err := mechanisms.Call(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: d}, func(m []*pkcs11.Mechanism) error {
						dk, rv = e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, m[0].Parameter, k, keyTemplate(label))
						return nil
					})
					if err != nil || rv != pkcs11.CKR_OK {
						errs <- "derive: " + pkcs11.Error(rv).Error()
						return
					}
					vals, rv := e.m.GetAttributeValue(e.sess, dk, []uint{pkcs11.CKA_LABEL, pkcs11.CKA_VALUE_LEN}, []int{1024, ulong})
					if rv != pkcs11.CKR_OK || string(vals[0]) != label || !bytes.Equal(vals[1], ulongBytes(16)) {
						errs <- "attributes: " + pkcs11.Error(rv).Error()
						return
					}
					out := make([]byte, 16)
					if rv := e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, dk); rv != pkcs11.CKR_OK {
						errs <- "encrypt init: " + pkcs11.Error(rv).Error()
						return
					}
					if _, rv := e.m.Encrypt(e.sess, make([]byte, 16), out); rv != pkcs11.CKR_OK {
						errs <- "encrypt: " + pkcs11.Error(rv).Error()
						return
					}
					c, _ := aes.NewCipher(keyValue)
					dv := make([]byte, 16)
					c.Encrypt(dv, d)
					c, _ = aes.NewCipher(dv)
					want := make([]byte, 16)
					c.Encrypt(want, make([]byte, 16))
					if !bytes.Equal(out, want) {
						errs <- "wrong check value"
						return
					}
					if rv := e.m.DestroyObject(e.sess, dk); rv != pkcs11.CKR_OK {
						errs <- "destroy: " + pkcs11.Error(rv).Error()
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		gc.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		base.destroy(t, k)
	})
}

// ---------------------------------------------------------------------------
// Allocations and speed.

// TestAllocs: no Go allocation for the calls that return no slice, two for
// GetAttributeValue (the [][]byte and the buffer holding the values).
func TestAllocs(t *testing.T) {
	e := open(t, lab.NSS(t))
	k := e.importAES(t, keyValue, "ck-allocs")
	tmpl := template13()
	types := []uint{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_LABEL}
	maxLen := []int{1, 1, ulong, ulong, 256}
	in, out := make([]byte, 32), make([]byte, 16)
	var wrapped []byte
	withParam(t, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: data}, func(param []byte) {
		wrapped = lab.AESBlock(t, keyValue, data)
		derive := testing.AllocsPerRun(100, func() {
			dk, rv := e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, param, k, tmpl)
			requireOK(t, rv, "C_DeriveKey")
			requireOK(t, e.m.DestroyObject(e.sess, dk), "C_DestroyObject")
		})
		require.Zero(t, derive, "DeriveKey (13 attributes) + DestroyObject")
	})
	unwrap := testing.AllocsPerRun(100, func() {
		h, rv := e.m.UnwrapKey(e.sess, pkcs11.CKM_AES_ECB, nil, k, wrapped, tmpl)
		requireOK(t, rv, "C_UnwrapKey")
		requireOK(t, e.m.DestroyObject(e.sess, h), "C_DestroyObject")
	})
	require.Zero(t, unwrap, "UnwrapKey + DestroyObject")
	enc := testing.AllocsPerRun(100, func() {
		requireOK(t, e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, k), "C_EncryptInit")
		_, rv := e.m.Encrypt(e.sess, in[:16], out)
		requireOK(t, rv, "C_Encrypt")
	})
	require.Zero(t, enc, "EncryptInit + Encrypt")
	withParam(t, pkcs11.CKM_AES_MAC_GENERAL, mechanisms.MACGeneralParams(16), func(param []byte) {
		sign := testing.AllocsPerRun(100, func() {
			requireOK(t, e.m.SignInit(e.sess, pkcs11.CKM_AES_MAC_GENERAL, param, k), "C_SignInit")
			_, rv := e.m.Sign(e.sess, in, out)
			requireOK(t, rv, "C_Sign")
		})
		require.Zero(t, sign, "SignInit + Sign")
	})
	get := testing.AllocsPerRun(100, func() {
		_, rv := e.m.GetAttributeValue(e.sess, k, types, maxLen)
		requireOK(t, rv, "C_GetAttributeValue")
	})
	require.Equal(t, 2.0, get, "GetAttributeValue")
	e.destroy(t, k)
}

// benchEnv opens a session on the NSS softoken with an AES base key.
func benchEnv(b *testing.B) (*env, uint) {
	e := open(b, lab.NSS(b))
	k := e.importAES(b, keyValue, "ck-bench")
	b.Cleanup(func() { e.m.DestroyObject(e.sess, k) })
	return e, k
}

// rawTemplate is a minimal 6-attribute template (class, key type, length,
// token, sensitive, extractable), the one the first C baselines used;
// internal/baseline, the C baseline of the benchmarks, now takes
// p11derive's own template.
func rawTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
	}
}

// BenchmarkDeriveKey: C_DeriveKey (CKM_AES_ECB_ENCRYPT_DATA, 13-attribute
// template) then C_DestroyObject of the new key, on the NSS softoken; and
// ck-6attr, the same with the minimal template of rawTemplate.
func BenchmarkDeriveKey(b *testing.B) {
	e, k := benchEnv(b)
	tmpl := template13()
	b.Run("ck-6attr", func(b *testing.B) {
		raw := rawTemplate()
		withParam(b, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: data}, func(param []byte) {
			b.ReportAllocs()
			for b.Loop() {
				dk, rv := e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, param, k, raw)
				if rv != pkcs11.CKR_OK {
					b.Fatal(pkcs11.Error(rv))
				}
				if rv := e.m.DestroyObject(e.sess, dk); rv != pkcs11.CKR_OK {
					b.Fatal(pkcs11.Error(rv))
				}
			}
		})
	})
	b.Run("ck", func(b *testing.B) {
		withParam(b, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: data}, func(param []byte) {
			b.ReportAllocs()
			for b.Loop() {
				dk, rv := e.m.DeriveKey(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, param, k, tmpl)
				if rv != pkcs11.CKR_OK {
					b.Fatal(pkcs11.Error(rv))
				}
				if rv := e.m.DestroyObject(e.sess, dk); rv != pkcs11.CKR_OK {
					b.Fatal(pkcs11.Error(rv))
				}
			}
		})
	})
	b.Run("miekg", func(b *testing.B) {
		withParam(b, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &mechanisms.KeyDerivationStringData{Data: data}, func(param []byte) {
			mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB_ENCRYPT_DATA, param)}
			sess := pkcs11.SessionHandle(e.sess)
			b.ReportAllocs()
			for b.Loop() {
				dk, err := e.ctx.DeriveKey(sess, mech, pkcs11.ObjectHandle(k), tmpl)
				if err != nil {
					b.Fatal(err)
				}
				if err := e.ctx.DestroyObject(sess, dk); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// BenchmarkGetAttributeValue: CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_KEY_TYPE,
// CKA_VALUE_LEN and CKA_LABEL of a key on the NSS softoken.
func BenchmarkGetAttributeValue(b *testing.B) {
	e, k := benchEnv(b)
	types := []uint{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_LABEL}
	b.Run("ck", func(b *testing.B) {
		maxLen := []int{1, 1, ulong, ulong, 256}
		b.ReportAllocs()
		for b.Loop() {
			if _, rv := e.m.GetAttributeValue(e.sess, k, types, maxLen); rv != pkcs11.CKR_OK {
				b.Fatal(pkcs11.Error(rv))
			}
		}
	})
	b.Run("miekg", func(b *testing.B) {
		tmpl := make([]*pkcs11.Attribute, len(types))
		for i, ty := range types {
			tmpl[i] = pkcs11.NewAttribute(ty, nil)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.ctx.GetAttributeValue(pkcs11.SessionHandle(e.sess), pkcs11.ObjectHandle(k), tmpl); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncrypt: C_EncryptInit (CKM_AES_ECB) and C_Encrypt of one block.
func BenchmarkEncrypt(b *testing.B) {
	e, k := benchEnv(b)
	in := make([]byte, 16)
	b.Run("ck", func(b *testing.B) {
		out := make([]byte, 16)
		b.ReportAllocs()
		for b.Loop() {
			if rv := e.m.EncryptInit(e.sess, pkcs11.CKM_AES_ECB, nil, k); rv != pkcs11.CKR_OK {
				b.Fatal(pkcs11.Error(rv))
			}
			if _, rv := e.m.Encrypt(e.sess, in, out); rv != pkcs11.CKR_OK {
				b.Fatal(pkcs11.Error(rv))
			}
		}
	})
	b.Run("miekg", func(b *testing.B) {
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}
		sess := pkcs11.SessionHandle(e.sess)
		b.ReportAllocs()
		for b.Loop() {
			if err := e.ctx.EncryptInit(sess, mech, pkcs11.ObjectHandle(k)); err != nil {
				b.Fatal(err)
			}
			if _, err := e.ctx.Encrypt(sess, in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkSign: C_SignInit (CKM_AES_MAC_GENERAL, 16-byte MAC) and C_Sign
// of two blocks.
func BenchmarkSign(b *testing.B) {
	e, k := benchEnv(b)
	in := make([]byte, 32)
	withParam(b, pkcs11.CKM_AES_MAC_GENERAL, mechanisms.MACGeneralParams(16), func(param []byte) {
		b.Run("ck", func(b *testing.B) {
			out := make([]byte, 16)
			b.ReportAllocs()
			for b.Loop() {
				if rv := e.m.SignInit(e.sess, pkcs11.CKM_AES_MAC_GENERAL, param, k); rv != pkcs11.CKR_OK {
					b.Fatal(pkcs11.Error(rv))
				}
				if _, rv := e.m.Sign(e.sess, in, out); rv != pkcs11.CKR_OK {
					b.Fatal(pkcs11.Error(rv))
				}
			}
		})
		b.Run("miekg", func(b *testing.B) {
			mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_MAC_GENERAL, param)}
			sess := pkcs11.SessionHandle(e.sess)
			b.ReportAllocs()
			for b.Loop() {
				if err := e.ctx.SignInit(sess, mech, pkcs11.ObjectHandle(k)); err != nil {
					b.Fatal(err)
				}
				if _, err := e.ctx.Sign(sess, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// TestDeriveKeyData: the parameter ck builds on the C stack gives the keys
// that mechanisms.Call's gives: ECB (CK_KEY_DERIVATION_STRING_DATA) and
// AES-CBC (CK_AES_CBC_ENCRYPT_DATA_PARAMS), on both tokens, allocating
// nothing.
func TestDeriveKeyData(t *testing.T) {
	forEachToken(t, func(t *testing.T, tok *lab.Token) {
		e := open(t, tok)
		k := e.importAES(t, keyValue, "ck-derive-data-base")
		dk, rv := e.m.DeriveKeyData(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, nil, data, k, keyTemplate("ck-dd"))
		requireOK(t, rv, "C_DeriveKey (ECB)")
		require.Equal(t, lab.AESBlock(t, lab.AESBlock(t, keyValue, data), make([]byte, 16)), e.checkValue(t, dk), "DK = AES_K(data)")
		e.destroy(t, dk)

		iv := make([]byte, 16)
		for i := range iv {
			iv[i] = byte(0xA0 + i)
		}
		x := make([]byte, 16)
		for i := range x {
			x[i] = data[i] ^ iv[i]
		}
		dk, rv = e.m.DeriveKeyData(e.sess, pkcs11.CKM_AES_CBC_ENCRYPT_DATA, iv, data, k, keyTemplate("ck-dd-cbc"))
		requireOK(t, rv, "C_DeriveKey (CBC)")
		require.Equal(t, lab.AESBlock(t, lab.AESBlock(t, keyValue, x), make([]byte, 16)), e.checkValue(t, dk), "DK = AES-CBC_K(iv, data)")
		e.destroy(t, dk)

		_, rv = e.m.DeriveKeyData(e.sess, pkcs11.CKM_AES_CBC_ENCRYPT_DATA, iv[:5], data, k, keyTemplate("ck-dd-bad"))
		requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, rv, "a 5-byte IV")
		if tok.Kind == lab.KindNSS {
			tmpl := template13()
			allocs := testing.AllocsPerRun(100, func() {
				dk, rv := e.m.DeriveKeyData(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, nil, data, k, tmpl)
				requireOK(t, rv, "C_DeriveKey")
				requireOK(t, e.m.DestroyObject(e.sess, dk), "C_DestroyObject")
			})
			require.Zero(t, allocs, "DeriveKeyData + DestroyObject")
		}
		e.destroy(t, k)
	})
}

// TestGetFixedAttributes reads what GetAttributeValue reads, onto the
// stack, and marks what the token does not give.
func TestGetFixedAttributes(t *testing.T) {
	types := []uint{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_VALUE_LEN, pkcs11.CKA_CLASS}
	sizes := []int{1, 1, ulong, ulong, ulong}
	forEachToken(t, func(t *testing.T, tok *lab.Token) {
		e := open(t, tok)
		k := e.importAES(t, keyValue, "ck-fixed-base")
		dk, rv := e.deriveECB(t, k, data, keyTemplate("ck-fixed-dk"))
		requireOK(t, rv, "C_DeriveKey")
		want, rv := e.m.GetAttributeValue(e.sess, dk, types, sizes)
		requireOK(t, rv, "C_GetAttributeValue")
		vals, lens := make([][8]byte, len(types)), make([]int, len(types))
		x := &Fixed{Types: types, Sizes: sizes, Vals: vals, Lens: lens}
		requireOK(t, e.m.GetFixedAttributes(e.sess, dk, x), "GetFixedAttributes")
		for i := range types {
			require.Equal(t, want[i], vals[i][:lens[i]], "attribute %#x", types[i])
		}
		// An attribute no object has: the token says so,
		// and the others are still read.
		rv = e.m.GetFixedAttributes(e.sess, dk, &Fixed{Types: []uint{pkcs11.CKA_SENSITIVE, 0x7ffffff0}, Sizes: []int{1, ulong}, Vals: vals, Lens: lens})
		requireRV(t, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, rv, "an unknown attribute")
		require.Equal(t, []byte{1}, vals[0][:lens[0]])
		require.Equal(t, -1, lens[1])
		requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, e.m.GetFixedAttributes(e.sess, dk, &Fixed{Types: types, Sizes: sizes[:2], Vals: vals, Lens: lens}), "sizes too short")
		requireRV(t, pkcs11.CKR_ARGUMENTS_BAD, e.m.GetFixedAttributes(e.sess, dk, &Fixed{Types: types[:1], Sizes: []int{9}, Vals: vals, Lens: lens}), "a size above a CK_ULONG")
		// The same read in the crossing that makes the key.
		dk2, rv, readRv := e.m.DeriveKeyDataRead(e.sess, pkcs11.CKM_AES_ECB_ENCRYPT_DATA, nil, data, k, keyTemplate("ck-fixed-dk2"), x)
		requireOK(t, rv, "C_DeriveKey")
		requireOK(t, readRv, "C_GetAttributeValue")
		for i := range types {
			require.Equal(t, want[i], vals[i][:lens[i]], "attribute %#x", types[i])
		}
		e.destroy(t, dk2)
		if tok.Kind == lab.KindNSS { // SoftHSM2 does not unwrap with CKM_AES_ECB
			wrapped := lab.AESBlock(t, keyValue, data)
			uk, rv, readRv := e.m.UnwrapKeyRead(e.sess, pkcs11.CKM_AES_ECB, nil, k, wrapped, keyTemplate("ck-fixed-uk"), x)
			requireOK(t, rv, "C_UnwrapKey")
			requireOK(t, readRv, "C_GetAttributeValue")
			require.Equal(t, ulongBytes(pkcs11.CKK_AES), vals[2][:lens[2]])
			e.destroy(t, uk)

			allocs := testing.AllocsPerRun(100, func() { e.m.GetFixedAttributes(e.sess, dk, x) })
			require.Zero(t, allocs, "GetFixedAttributes")
		}
		e.destroy(t, dk)
		e.destroy(t, k)
	})
}
