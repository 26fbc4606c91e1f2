package derive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/kwref"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/ref"
)

// Tests through p11-kit (issue 11): the proxy (p11-kit-proxy.so, in
// process) and the RPC (p11-kit-client.so and a "p11-kit server"). Both
// hand out a new function list, with its own sessions, on every
// C_GetFunctionList: these tests use the Token's API only (no miekg
// context of their own, which would be a list of its own), and every rig
// token has a module path of its own (p11derive shares modules by path).

// openRig opens a Token on a rig token (lab.Proxy, lab.RPC), with the
// rig's environment set first: p11-kit-client.so reads
// P11_KIT_SERVER_ADDRESS, and SoftHSM2 SOFTHSM2_CONF, when the list is
// made. When the test ends the Token is closed and its function list
// finalised (finalizeModule), which ends the RPC client's connection.
func openRig(t *testing.T, rig *lab.Token) *Token {
	t.Helper()
	rig.Setenv(t)
	cfg := Config{Module: rig.Module, InitArgs: rig.InitArgs, Slot: &rig.SlotID}
	if rig.Login {
		cfg.PIN = rig.PIN
	}
	tok, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, tok.Close())
		require.NoError(t, finalizeModule(rig.Module))
	})
	return tok
}

// openDirect opens a Token on the lab token's own module, as the other
// tests do. The module stays initialised (the lab finalises it).
func openDirect(t *testing.T, l *lab.Token) *Token {
	t.Helper()
	cfg := Config{Module: l.Module, InitArgs: l.InitArgs, Slot: &l.SlotID}
	if l.Login {
		cfg.PIN = l.PIN
	}
	tok, err := Open(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return tok
}

// finalizeModule calls C_Finalize on the function list of the module at
// path and forgets the module, once no Token uses it. p11derive never
// finalises (see module.go); tests through p11-kit-client.so must, since
// the client keeps its connection to the server (and the server's
// "p11-kit remote" child) until C_Finalize, and the RPC rig fails a test
// that leaves a client connected.
func finalizeModule(path string) error {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m := modules[path]
	if m == nil {
		return nil
	}
	if m.refs != 0 {
		return fmt.Errorf("module %s still has %d open Tokens", path, m.refs)
	}
	delete(modules, path)
	if rv := m.ck.Finalize(); rv != pkcs11.CKR_OK {
		return fmt.Errorf("C_Finalize of %s: %w", path, pkcs11.Error(rv))
	}
	return nil
}

// rigTokens are the lab tokens the p11-kit tests reach: a fresh SoftHSM2
// token (not the shared one: the proxy and the server load the module
// themselves) and NSS softoken's crypto slot.
func rigTokens() []struct {
	kind string
	make func(t *testing.T) *lab.Token
} {
	return []struct {
		kind string
		make func(t *testing.T) *lab.Token
	}{
		{"softhsm2", func(t *testing.T) *lab.Token { return lab.SoftHSM2(t) }},
		{"nss", func(t *testing.T) *lab.Token { tokens(t); return lab.NSS(t) }},
	}
}

// keyCount is the number of secret keys the Token's sessions see.
func keyCount(t *testing.T, tok *Token) int {
	t.Helper()
	labels, err := tok.Labels(context.Background())
	require.NoError(t, err)
	return len(labels)
}

// importBase imports a base key of known value through the Token's API,
// with CKA_ID id, usable by every strategy; it is destroyed when the test
// ends.
func importBase(t *testing.T, tok *Token, ckk uint, value []byte, id string) *Key {
	t.Helper()
	kt, err := ParseKeyType(KeyTypeName(ckk), len(value))
	require.NoError(t, err)
	k, err := tok.Import(context.Background(), KeySpec{Label: id, ID: []byte(id), Type: kt,
		Usage: UseDerive | UseEncrypt | UseSign | UseUnwrap | UseWrap}, value)
	require.NoError(t, err)
	t.Cleanup(func() { tok.Destroy(context.Background(), k) })
	return k
}

// rigCase is a derivation with its software reference.
type rigCase struct {
	name    string
	baseCKK uint
	base    []byte
	r       Request
	want    []byte // DK's value
}

// rigCases are the native, MAC-unwrap and unwrap known answers (katCases,
// their inverse functions) and the KDFs, each to run with every strategy
// that computes it.
func rigCases(t *testing.T) []rigCase {
	var out []rigCase
	for _, c := range katCases() {
		out = append(out, rigCase{c.name, c.baseCKK, c.base,
			Request{Function: c.f, Data: c.data, KeyType: c.out}, refEncrypt(t, c.baseCKK, c.base, c.f, c.data)[:c.out.n]})
		if c.f.Cipher == DES || c.out.ckk == pkcs11.CKK_GENERIC_SECRET {
			continue
		}
		d := Decrypt{Cipher: c.f.Cipher, Mode: c.f.Mode, IV: c.f.IV}
		out = append(out, rigCase{c.name + "/decrypt", c.baseCKK, c.base,
			Request{Function: d, Data: c.data, KeyType: c.out}, refDecrypt(t, c.baseCKK, c.base, d, c.data)[:c.out.n]})
	}
	hmacKey := lab.Unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	aesKey := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
	data := []byte("p11derive through p11-kit\x00device-0042")
	for _, c := range []struct {
		name string
		f    SP800108
		ckk  uint
		key  []byte
		out  KeyType
	}{
		{"sp800-108/counter/hmac-sha256", SP800108{Mode: SP800108Counter, PRF: HMACSHA256}, pkcs11.CKK_GENERIC_SECRET, hmacKey, KeyAES128},
		{"sp800-108/counter/aes-cmac", SP800108{Mode: SP800108Counter, PRF: AESCMAC}, pkcs11.CKK_AES, aesKey, KeyAES256},
		{"sp800-108/feedback/hmac-sha256", SP800108{Mode: SP800108Feedback, PRF: HMACSHA256, IV: lab.Unhex("00112233445566778899aabbccddeeff")}, pkcs11.CKK_GENERIC_SECRET, hmacKey, KeyAES256},
	} {
		out = append(out, rigCase{c.name, c.ckk, c.key, Request{Function: c.f, Data: data, KeyType: c.out}, refSP800108(t, c.f, c.key, data, c.out.n)})
	}
	// RFC 5869 A.1, cut to an AES-256 key.
	ikm := lab.Unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
	okm := lab.Unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
	out = append(out, rigCase{"hkdf/rfc5869-a1", pkcs11.CKK_GENERIC_SECRET, ikm,
		Request{Function: HKDF{Hash: SHA256, Salt: lab.Unhex("000102030405060708090a0b0c")}, Data: lab.Unhex("f0f1f2f3f4f5f6f7f8f9"), KeyType: KeyAES256}, okm[:32]})
	sum := sha256.Sum256(append(append([]byte{}, hmacKey...), data...))
	out = append(out, rigCase{"sha256-concat", pkcs11.CKK_GENERIC_SECRET, hmacKey, Request{Function: SHA256Concat{}, Data: data, KeyType: KeyAES128}, sum[:16]})
	des2 := lab.Unhex("0123456789abcdeffedcba9876543210")
	mask := lab.Unhex("45454545454545454545454545454545")
	xored := make([]byte, 16)
	for i := range xored {
		xored[i] = des2[i] ^ mask[i]
	}
	out = append(out, rigCase{"xor-data", pkcs11.CKK_DES2, des2, Request{Function: XORData{}, Data: mask, KeyType: KeyDES2}, xored})
	return out
}

// refDecrypt is D(data, key) in software.
func refDecrypt(t testing.TB, ckk uint, key []byte, f Decrypt, data []byte) []byte {
	b := refBlock(t, ckk, key)
	var out []byte
	var err error
	if f.Mode == CBC {
		out, err = ref.DecryptCBC(b, f.IV, data)
	} else {
		out, err = ref.DecryptECB(b, data)
	}
	require.NoError(t, err)
	return out
}

// dkValue tells a derived key's value by what the token computes with it:
// its check value for AES and DES keys; for generic secrets (which have
// none), the key wrapped under kek with CKM_AES_KEY_WRAP (DK must be
// extractable), compared with RFC 3394 in software.
func assertDK(t *testing.T, tok *Token, kek *Key, kekValue []byte, dk *Key, kt KeyType, want []byte) {
	t.Helper()
	ctx := context.Background()
	if kt.ckk == pkcs11.CKK_GENERIC_SECRET {
		wrapped, err := tok.Wrap(ctx, kek, dk, pkcs11.CKM_AES_KEY_WRAP, nil)
		require.NoError(t, err)
		ref, err := kwref.Wrap(kekValue, kwref.IV, want)
		require.NoError(t, err)
		assert.Equal(t, hex.EncodeToString(ref), hex.EncodeToString(wrapped), "DK wrapped differs from the reference")
		return
	}
	kcv, err := tok.CheckValue(ctx, dk)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(refKCV(t, kt, want)), hex.EncodeToString(kcv), "DK's check value differs from the reference")
}

// outcome is what a derivation gave, to compare the proxy with the module
// loaded directly: the check value of DK, or the error's CKR (0 for errors
// that are not the token's).
type outcome struct {
	kcv string
	ckr uint
	err error
}

// TestProxyKnownAnswers derives through p11-kit-proxy.so, with every
// strategy that computes each function: what the token runs directly gives
// the same key through the proxy (the software reference), and what it
// refuses directly it refuses through the proxy, with the same CKR. Base
// keys are imported through the proxy and found by CKA_ID from the direct
// Token, which sees the same objects (the proxy shares the module's
// instance). Nothing is left behind.
func TestProxyKnownAnswers(t *testing.T) {
	for _, rt := range rigTokens() {
		t.Run(rt.kind, func(t *testing.T) {
			l := rt.make(t)
			proxy := openRig(t, lab.Proxy(t, l))
			direct := openDirect(t, l)
			ctx := context.Background()
			start := keyCount(t, proxy)
			startDirect := keyCount(t, direct)
			kekValue := lab.Unhex("000102030405060708090a0b0c0d0e0f")
			kek := importBase(t, proxy, pkcs11.CKK_AES, kekValue, "kek")
			ran := map[Strategy]int{}
			for i, c := range rigCases(t) {
				t.Run(c.name, func(t *testing.T) {
					id := fmt.Sprintf("base-%d", i)
					base := importBase(t, proxy, c.baseCKK, c.base, id)
					seen, err := direct.Find(ctx, Selector{ID: []byte(id)})
					require.NoError(t, err, "the direct Token sees the key imported through the proxy")
					objects := keyCount(t, proxy)
					for _, st := range Strategies() {
						s := strategyByName(st)
						if !s.computes(c.r.Function) {
							continue
						}
						if a, ok := s.(applier); ok && a.applies(&c.r) != nil {
							continue
						}
						r := c.r
						r.Strategy = st
						r.Extractable = c.r.KeyType.ckk == pkcs11.CKK_GENERIC_SECRET
						got := derivation(t, proxy, base, r, kek, kekValue, c.want)
						want := derivation(t, direct, seen, r, nil, nil, nil)
						if c.r.KeyType.ckk != pkcs11.CKK_GENERIC_SECRET {
							assert.Equal(t, want.kcv, got.kcv, "%s: the proxy's key differs from the direct one", st)
						}
						assert.Equal(t, want.ckr, got.ckr, "%s: the proxy refused differently: proxy %v, direct %v", st, got.err, want.err)
						assert.Equal(t, want.err == nil, got.err == nil, "%s: proxy %v, direct %v", st, got.err, want.err)
						if got.err == nil {
							ran[st]++
						}
						assert.Equal(t, objects, keyCount(t, proxy), "%s left an object behind", st)
					}
				})
			}
			t.Logf("%s through the proxy: derivations that ran, per strategy: %v", rt.kind, ran)
			require.NoError(t, proxy.Destroy(ctx, kek))
			assert.Equal(t, start, keyCount(t, proxy), "objects back to start")
			assert.Equal(t, startDirect, keyCount(t, direct), "objects back to start, as seen directly")
		})
	}
}

// derivation derives r on tok and checks DK against want (when given),
// destroying it.
func derivation(t *testing.T, tok *Token, base *Key, r Request, kek *Key, kekValue, want []byte) outcome {
	t.Helper()
	ctx := context.Background()
	res, err := tok.Derive(ctx, base, r)
	if err != nil {
		var te *TokenError
		o := outcome{err: err}
		if errors.As(err, &te) {
			o.ckr = te.CKR()
		}
		return o
	}
	defer func() { assert.NoError(t, tok.Destroy(ctx, res.Key)) }()
	if r.Strategy != Auto {
		assert.Equal(t, r.Strategy, res.Strategy)
	}
	assert.True(t, res.Key.Sensitive)
	if want != nil {
		assertDK(t, tok, kek, kekValue, res.Key, r.KeyType, want)
	}
	var o outcome
	if r.KeyType.ckk != pkcs11.CKK_GENERIC_SECRET {
		kcv, err := tok.CheckValue(ctx, res.Key)
		require.NoError(t, err)
		o.kcv = hex.EncodeToString(kcv)
	}
	return o
}

// TestProxyObjects: through the proxy, the Token's other operations work
// as with the module loaded directly — check values, generated keys (the
// direct Token finds them and computes the same check value), Find by
// CKA_ID (and label), Keys, Wrap (the reference RFC 3394 wrap of the known
// value), SessionCopy, Attributes, module and mechanism information —
// and everything made is gone at the end.
func TestProxyObjects(t *testing.T) {
	for _, rt := range rigTokens() {
		t.Run(rt.kind, func(t *testing.T) {
			l := rt.make(t)
			pt := lab.Proxy(t, l)
			proxy := openRig(t, pt)
			direct := openDirect(t, l)
			ctx := context.Background()
			start, startDirect := keyCount(t, proxy), keyCount(t, direct)

			info, err := proxy.ModuleInfo()
			require.NoError(t, err)
			t.Logf("module through the proxy: %q by %q, cryptoki %d.%d", info.LibraryDescription, info.ManufacturerID, info.CryptokiVersion.Major, info.CryptokiVersion.Minor)
			assert.Contains(t, info.LibraryDescription+info.ManufacturerID, "PKCS#11 Kit")
			mi, err := proxy.MechanismInfo(pkcs11.CKM_AES_ECB_ENCRYPT_DATA)
			require.NoError(t, err, "the proxy passes every mechanism on")
			assert.NotZero(t, mi.Flags&pkcs11.CKF_DERIVE)
			state, err := proxy.SessionState(ctx)
			require.NoError(t, err)
			if l.Login {
				assert.Equal(t, uint(pkcs11.CKS_RW_USER_FUNCTIONS), state)
			}

			// Check value of a key of known value (SP 800-38A's AES key).
			value := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
			base := importBase(t, proxy, pkcs11.CKK_AES, value, "proxy-base")
			kcv, err := proxy.CheckValue(ctx, base)
			require.NoError(t, err)
			refCV, err := ref.CheckValue(ref.AES, value)
			require.NoError(t, err)
			assert.Equal(t, hex.EncodeToString(refCV), hex.EncodeToString(kcv))

			// Find by CKA_ID, by ID and label, and Keys.
			found, err := proxy.Find(ctx, Selector{ID: []byte("proxy-base")})
			require.NoError(t, err)
			assert.Equal(t, base.Handle, found.Handle)
			assert.Equal(t, "proxy-base", found.Label)
			_, err = proxy.Find(ctx, Selector{ID: []byte("proxy-base"), Label: "another"})
			assert.ErrorIs(t, err, ErrNotFound)
			keys, err := proxy.Keys(ctx, Selector{Label: "proxy-base"})
			require.NoError(t, err)
			require.Len(t, keys, 1)
			assert.Equal(t, []byte("proxy-base"), keys[0].ID)
			attrs, err := proxy.Attributes(ctx, base, pkcs11.CKA_ID, pkcs11.CKA_LABEL)
			require.NoError(t, err)
			assert.Equal(t, []byte("proxy-base"), attrs[pkcs11.CKA_ID])

			// A generated key: the direct Token finds it and agrees on its
			// check value.
			gen, err := proxy.Generate(ctx, KeySpec{Label: "proxy-gen", Type: KeyAES256, Usage: UseEncrypt | UseDerive})
			require.NoError(t, err)
			genKCV, err := proxy.CheckValue(ctx, gen)
			require.NoError(t, err)
			seen, err := direct.FindKey(ctx, "proxy-gen")
			require.NoError(t, err)
			seenKCV, err := direct.CheckValue(ctx, seen)
			require.NoError(t, err)
			assert.Equal(t, genKCV, seenKCV)
			// And keys derived from it agree too.
			r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"), KeyType: KeyAES256}
			a := derivation(t, proxy, gen, r, nil, nil, nil)
			b := derivation(t, direct, seen, r, nil, nil, nil)
			require.NoError(t, a.err)
			require.NoError(t, b.err)
			assert.Equal(t, a.kcv, b.kcv)
			require.NoError(t, proxy.Destroy(ctx, gen))

			// Wrap: an extractable DK under a key of known value.
			kekValue := lab.Unhex("000102030405060708090a0b0c0d0e0f")
			kek := importBase(t, proxy, pkcs11.CKK_AES, kekValue, "proxy-kek")
			data := lab.Unhex("6bc1bee22e409f96e93d7e117393172a")
			res, err := proxy.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128, Extractable: true})
			require.NoError(t, err)
			wrapped, err := proxy.Wrap(ctx, kek, res.Key, pkcs11.CKM_AES_KEY_WRAP, nil)
			require.NoError(t, err)
			want, err := kwref.Wrap(kekValue, kwref.IV, lab.Unhex("3ad77bb40d7a3660a89ecaf32466ef97")) // SP 800-38A F.1.1
			require.NoError(t, err)
			assert.Equal(t, hex.EncodeToString(want), hex.EncodeToString(wrapped))
			// A key that is not extractable is refused before any call.
			_, err = proxy.Wrap(ctx, kek, base, pkcs11.CKM_AES_KEY_WRAP, nil)
			assert.ErrorIs(t, err, ErrMissingAttribute)
			require.NoError(t, proxy.Destroy(ctx, res.Key))

			// SessionCopy: the same key, a session object.
			cp, err := proxy.SessionCopy(ctx, base)
			require.NoError(t, err)
			assert.False(t, cp.Token)
			assert.NotEqual(t, base.Handle, cp.Handle)
			cpKCV, err := proxy.CheckValue(ctx, cp)
			require.NoError(t, err)
			assert.Equal(t, kcv, cpKCV)
			require.NoError(t, proxy.Destroy(ctx, cp))

			require.NoError(t, proxy.Destroy(ctx, kek))
			require.NoError(t, proxy.Destroy(ctx, base))
			assert.Equal(t, start, keyCount(t, proxy), "objects back to start")
			assert.Equal(t, startDirect, keyCount(t, direct), "objects back to start, as seen directly")
		})
	}
}

// TestRPC derives through p11-kit-client.so and a "p11-kit server", whose
// RPC drops every mechanism whose parameters it cannot carry (all of
// *_ENCRYPT_DATA, the MACs, CMAC, CTR): check values and generated keys
// work; an exact request fails cleanly, saying that the token, as seen
// through this module, lists none of the mechanisms the exact strategies
// need, and naming the substitute it could run (NSS softoken:
// aes-ecb-decrypt, one C_UnwrapKey with CKM_AES_ECB; SoftHSM2 lists
// CKM_AES_ECB without CKF_UNWRAP, so none); allowing that substitute gives
// its known answer on NSS softoken, while SoftHSM2 refuses it, as it does
// directly.
func TestRPC(t *testing.T) {
	for _, rt := range rigTokens() {
		t.Run(rt.kind, func(t *testing.T) {
			rig := lab.RPC(t, rt.make(t))
			tok := openRig(t, rig)
			ctx := context.Background()
			start := keyCount(t, tok)
			assert.False(t, tok.Lists(pkcs11.CKM_AES_ECB_ENCRYPT_DATA), "the RPC leaves CKM_AES_ECB_ENCRYPT_DATA out")
			assert.True(t, tok.Lists(pkcs11.CKM_AES_ECB))

			value := lab.Unhex("2b7e151628aed2a6abf7158809cf4f3c")
			base := importBase(t, tok, pkcs11.CKK_AES, value, "rpc-base")
			kcv, err := tok.CheckValue(ctx, base)
			require.NoError(t, err)
			refCV, err := ref.CheckValue(ref.AES, value)
			require.NoError(t, err)
			assert.Equal(t, hex.EncodeToString(refCV), hex.EncodeToString(kcv))
			found, err := tok.Find(ctx, Selector{ID: []byte("rpc-base")})
			require.NoError(t, err)
			assert.Equal(t, base.Handle, found.Handle)

			gen, err := tok.Generate(ctx, KeySpec{Label: "rpc-gen", Type: KeyAES128, Usage: UseEncrypt | UseDerive})
			require.NoError(t, err)
			genKCV, err := tok.CheckValue(ctx, gen)
			require.NoError(t, err)
			assert.Len(t, genKCV, 3)
			require.NoError(t, tok.Destroy(ctx, gen))

			// An exact request: refused, saying why and what could run.
			data := lab.Unhex("6bc1bee22e409f96e93d7e117393172a")
			objects := keyCount(t, tok)
			_, err = tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
			require.Error(t, err)
			t.Logf("exact request through the RPC: %v", err)
			assert.ErrorIs(t, err, ErrUnsupported)
			var ue *UnsupportedError
			require.ErrorAs(t, err, &ue)
			require.Len(t, ue.Reasons, 4)
			for _, r := range ue.Reasons {
				// Auto tried each unlisted strategy: the client refused it.
				assert.ErrorIs(t, r.Err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID), r.Strategy)
			}
			assert.Equal(t, rig.Module, ue.Module)
			var names []Strategy
			for _, u := range ue.Unlisted {
				names = append(names, u.Strategy)
			}
			assert.ElementsMatch(t, []Strategy{Native, MACUnwrap, CMACUnwrap, StreamUnwrap}, names)
			msg := err.Error()
			assert.Contains(t, msg, fmt.Sprintf("the token, as seen through module %q, lists none of the mechanisms the exact strategies need", rig.Module))
			for _, m := range []string{"CKM_AES_ECB_ENCRYPT_DATA", "CKM_AES_MAC_GENERAL", "CKM_AES_CMAC", "CKM_AES_CTR"} {
				assert.Contains(t, msg, m)
			}
			if rt.kind == "nss" {
				assert.Contains(t, ue.Substitutes, "aes-ecb-decrypt")
				assert.Contains(t, msg, "if allowed: aes-ecb-decrypt")
			} else {
				// SoftHSM2 lists CKM_AES_ECB without CKF_UNWRAP: no
				// substitute is named that it would refuse.
				assert.NotContains(t, ue.Substitutes, "aes-ecb-decrypt")
			}
			assert.Equal(t, objects, keyCount(t, tok), "nothing left behind")
			// Asked again, the refusals are remembered: no call, same message.
			calls := tok.calls.Load()
			_, err2 := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
			require.Error(t, err2)
			assert.Equal(t, calls, tok.calls.Load())
			assert.Contains(t, err2.Error(), "lists none of the mechanisms the exact strategies need")
			if rt.kind == "nss" {
				assert.Contains(t, err2.Error(), "if allowed: aes-ecb-decrypt")
			}

			// Allowing the inverse function.
			res, err := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128,
				Allow: []Function{Decrypt{Cipher: AES, Mode: ECB}}})
			if l := rt.kind; l == "softhsm2" {
				// SoftHSM2 2.6.1 unwraps with CKM_AES_KEY_WRAP(_PAD) only,
				// directly too.
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrUnsupported)
				require.ErrorAs(t, err, &ue)
				last := ue.Reasons[len(ue.Reasons)-1]
				assert.Equal(t, Unwrap, last.Strategy)
				assert.ErrorIs(t, last.Err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID))
				mi, err := tok.MechanismInfo(pkcs11.CKM_AES_ECB)
				require.NoError(t, err)
				t.Logf("SoftHSM2's CKM_AES_ECB flags through the RPC: %#x", mi.Flags)
				t.Logf("aes-ecb-decrypt allowed, through the RPC to SoftHSM2: %v", err)
				assert.Equal(t, objects, keyCount(t, tok))
			} else {
				require.NoError(t, err)
				assert.Equal(t, "aes-ecb-decrypt", res.Function.Name())
				assert.Equal(t, Unwrap, res.Strategy)
				assert.Equal(t, 1+readBack, res.Calls)
				assertDK(t, tok, nil, nil, res.Key, KeyAES128, refDecrypt(t, pkcs11.CKK_AES, value, Decrypt{Cipher: AES, Mode: ECB}, data))
				require.NoError(t, tok.Destroy(ctx, res.Key))
			}
			require.NoError(t, tok.Destroy(ctx, base))
			assert.Equal(t, start, keyCount(t, tok), "objects back to start")
		})
	}
}

// TestGroupThroughProxy: a Group whose members are a SoftHSM2 token
// reached through p11-kit's proxy and another reached directly, holding
// base keys of the same value: proven the same at NewGroup, both members
// derive (one request at a time alternates), every DK the software
// reference's, nothing left on either token.
func TestGroupThroughProxy(t *testing.T) {
	a := lab.SoftHSM2(t)
	a.Setenv(t)
	viaProxy := openRig(t, lab.Proxy(t, a))
	b := lab.SoftHSM2(t)
	b.Setenv(t)
	direct := openDirect(t, b)
	label, value := lab.UniqueLabel("group-proxy"), lab.Random(t, 16)
	ctx := context.Background()
	before := [2]int{}
	for i, tok := range []*Token{viaProxy, direct} {
		before[i] = lab.Objects(t, []*lab.Token{a, b}[i])
		k, err := tok.Import(ctx, KeySpec{Label: label, Type: KeyAES128, Usage: UseDerive | UseEncrypt}, value)
		require.NoError(t, err)
		t.Cleanup(func() { tok.Destroy(ctx, k) })
	}
	g, err := NewGroup(ctx, GroupConfig{Members: []*Token{viaProxy, direct}, Base: Selector{Label: label}})
	require.NoError(t, err)
	defer g.Close()
	by := map[*Token]int{}
	for i := range 6 {
		data := rowData(i)
		res, err := g.Derive(ctx, Request{Function: aesECB, Data: data, KeyType: KeyAES128, Usage: UseEncrypt})
		require.NoError(t, err)
		kcv, err := res.Member.CheckValue(ctx, res.Key)
		require.NoError(t, err)
		require.NoError(t, g.Destroy(ctx, res))
		dk := lab.AESBlock(t, value, data)
		assert.Equal(t, lab.AESBlock(t, dk, make([]byte, 16))[:3], kcv, "row %d", i)
		by[res.Member]++
	}
	assert.Equal(t, 3, by[viaProxy], "the proxied member derived")
	assert.Equal(t, 3, by[direct])
	for i, l := range []*lab.Token{a, b} {
		assert.Equal(t, before[i]+1, lab.Objects(t, l), "member %d: its base key only", i+1)
	}
}
