package derive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// faultCKRs are the failures injected at every call: the device failing,
// and the session or the token vanishing under the derivation.
var faultCKRs = []uint{
	pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_FUNCTION_FAILED, pkcs11.CKR_DEVICE_MEMORY,
	pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_TOKEN_NOT_PRESENT,
}

// callsOf are the PKCS#11 functions the strategies call.
var callsOf = []string{"C_DeriveKey", "C_GetAttributeValue", "C_SignInit", "C_Sign", "C_EncryptInit", "C_Encrypt", "C_UnwrapKey", "C_DestroyObject"}

// totalFaults counts the faults the fault tests injected, for the log.
var totalFaults int

// softHSM2Wrapped is a fresh SoftHSM2 token, logged in with its PIN, seen
// through a forwarding module configured with cfg.
func softHSM2Wrapped(t *testing.T, cfg fwd.Config) (*labToken, *lab.Token) {
	t.Helper()
	l := lab.SoftHSM2(t)
	l.Setenv(t)
	w := fwd.Wrap(t, l, cfg)
	tok, err := Open(Config{Module: w.Module, Slot: &w.SlotID, PIN: w.PIN})
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return &labToken{kind: "softhsm2+fwd", lab: w, tok: tok}, w
}

// pool returns the handles of the Token's sessions and how many are idle.
func (lt *labToken) pool() (map[pkcs11.SessionHandle]bool, int) {
	lt.tok.pool.mu.Lock()
	defer lt.tok.pool.mu.Unlock()
	all := make(map[pkcs11.SessionHandle]bool, len(lt.tok.pool.all))
	for h := range lt.tok.pool.all {
		all[h] = true
	}
	return all, len(lt.tok.pool.idle)
}

// faultCase is one strategy computing one function, with the value DK
// must have.
type faultCase struct {
	name string
	st   Strategy
	f    Function
	data []byte
	kt   KeyType
	base *Key
	dk   []byte // DK by the software reference
}

// TestFaultsAtEveryCall fails each call of each strategy in turn with each
// of faultCKRs, on NSS softoken (every strategy) and SoftHSM2 (native,
// logged in). Every time: an error naming the step and the call, no object
// left behind, the base key unchanged, and the next derivation right. A
// session or token error drops the session (the test then really closes
// it, as the token said it was); the next derivation opens a fresh one.
func TestFaultsAtEveryCall(t *testing.T) {
	t.Run("nss", func(t *testing.T) {
		lt, w := wrapped(t, fwd.Config{})
		// Base keys made by another Token: closing this Token's sessions
		// must not take them.
		nss := tokens(t)[1]
		key := lab.Random(t, 32)
		gkey := lab.Random(t, 32)
		base := lt.reKey(t, nss.importKey(t, pkcs11.CKK_AES, key))
		gbase := lt.reKey(t, nss.importKey(t, pkcs11.CKK_GENERIC_SECRET, gkey))
		iv := lab.Random(t, 16)
		data := lab.Random(t, 32)
		cbc := Encrypt{Cipher: AES, Mode: CBC, IV: iv}
		ecbDecrypt := make([]byte, 32)
		blk := refBlock(t, pkcs11.CKK_AES, key)
		blk.Decrypt(ecbDecrypt, data[:16])
		blk.Decrypt(ecbDecrypt[16:], data[16:])
		kdf := SP800108{Mode: SP800108Counter, PRF: AESCMAC}
		sum := sha256.Sum256(append(append([]byte{}, gkey...), data...))
		runFaults(t, lt, w, fwd.Config{}, key, []faultCase{
			{"native/aes-cbc", Native, cbc, data, KeyAES256, base, refEncrypt(t, pkcs11.CKK_AES, key, cbc, data)},
			{"mac-unwrap/aes-cbc", MACUnwrap, cbc, data, KeyAES256, base, refEncrypt(t, pkcs11.CKK_AES, key, cbc, data)},
			{"cmac-unwrap/aes-cbc", CMACUnwrap, cbc, data, KeyAES256, base, refEncrypt(t, pkcs11.CKK_AES, key, cbc, data)},
			{"unwrap/aes-ecb-decrypt", Unwrap, Decrypt{Cipher: AES, Mode: ECB}, data, KeyAES256, base, ecbDecrypt},
			{"native/sp800-108-counter", Native, kdf, data, KeyAES256, base, refSP800108(t, kdf, key, data, 32)},
			{"native/sha256-concat", Native, SHA256Concat{}, data, KeyAES128, gbase, sum[:16]},
		})
	})
	t.Run("nss/stream-unwrap", func(t *testing.T) {
		cfg := fwd.Config{EmulateStreamUnwrap: true}
		lt, w := wrapped(t, cfg)
		key := lab.Random(t, 32)
		base := lt.reKey(t, tokens(t)[1].importKey(t, pkcs11.CKK_AES, key))
		data := lab.Random(t, 32)
		ecb := Encrypt{Cipher: AES, Mode: ECB}
		runFaults(t, lt, w, cfg, key, []faultCase{
			{"stream-unwrap/aes-ecb", StreamUnwrap, ecb, data, KeyAES256, base, refEncrypt(t, pkcs11.CKK_AES, key, ecb, data)},
		})
	})
	t.Run("softhsm2", func(t *testing.T) {
		lt, w := softHSM2Wrapped(t, fwd.Config{})
		key := lab.Random(t, 32)
		// A token object: it outlives the sessions the test closes.
		base := lt.importKey(t, pkcs11.CKK_AES, key, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true))
		data := lab.Random(t, 32)
		cbc := Encrypt{Cipher: AES, Mode: CBC, IV: lab.Random(t, 16)}
		ecb := Encrypt{Cipher: AES, Mode: ECB}
		runFaults(t, lt, w, fwd.Config{}, key, []faultCase{
			{"native/aes-cbc", Native, cbc, data, KeyAES256, base, refEncrypt(t, pkcs11.CKK_AES, key, cbc, data)},
			{"native/aes-ecb", Native, ecb, data[:16], KeyAES128, base, refEncrypt(t, pkcs11.CKK_AES, key, ecb, data[:16])},
		})
	})
	t.Logf("%d faults injected in all", totalFaults)
}

// reKey reads a key made through another Token of the same module
// instance through lt's Token.
func (lt *labToken) reKey(t *testing.T, k *Key) *Key {
	t.Helper()
	again, err := lt.tok.Key(context.Background(), k.Handle)
	require.NoError(t, err)
	return again
}

// runFaults runs the fault matrix of cases on lt, reached through the
// forwarder w whose configuration besides the faults is cfg. key is the
// value of the cases' AES base key, for its check value.
func runFaults(t *testing.T, lt *labToken, w *lab.Token, cfg fwd.Config, key []byte, cases []faultCase) {
	ctx := context.Background()
	configure := func(faults ...fwd.Fault) {
		c := cfg
		c.Faults = faults
		fwd.Configure(t, w, c)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Request{Function: c.f, Data: c.data, KeyType: c.kt, Strategy: c.st}
			wantKCV := refKCV(t, c.kt, c.dk[:c.kt.n])
			baseKCV := func() string {
				if c.base.Type != pkcs11.CKK_AES {
					return ""
				}
				kcv, err := lt.tok.CheckValue(ctx, c.base)
				require.NoError(t, err)
				return hex.EncodeToString(kcv)
			}
			wantBaseKCV := ""
			if c.base.Type == pkcs11.CKK_AES {
				wantBaseKCV = hex.EncodeToString(refKCV(t, KeyType{ckk: pkcs11.CKK_AES, n: len(key)}, key))
			}
			require.Equal(t, wantBaseKCV, baseKCV())

			// A clean derivation: its calls, function by function.
			configure()
			res, err := lt.tok.Derive(ctx, c.base, r)
			require.NoError(t, err)
			counts := map[string]int{}
			total := 0
			for _, fn := range callsOf {
				counts[fn] = fwd.Calls(t, w, fn)
				total += counts[fn]
			}
			assert.Equal(t, res.Calls, total, "the result's call count is what crossed the API")
			kcv, err := lt.tok.CheckValue(ctx, res.Key)
			require.NoError(t, err)
			require.Equal(t, hex.EncodeToString(wantKCV), hex.EncodeToString(kcv), "DK differs from the reference")
			require.NoError(t, lt.tok.Destroy(ctx, res.Key))
			objects := lt.objects(t)

			faults := 0
			for _, fn := range callsOf {
				for n := 1; n <= counts[fn]; n++ {
					for _, ckr := range faultCKRs {
						what := fmt.Sprintf("%s #%d %s", fn, n, pkcs11.Error(ckr).Error())
						before, _ := lt.pool()
						configure(fwd.Fault{Func: fn, N: n, CKR: ckr})
						_, err := lt.tok.Derive(ctx, c.base, r)
						require.Error(t, err, what)
						faults++
						var te *TokenError
						require.True(t, errors.As(err, &te), "%s: %v", what, err)
						assert.Equal(t, fn, te.Call, "%s: the error names the call: %v", what, err)
						assert.NotEmpty(t, te.Step, what)
						assert.Contains(t, err.Error(), te.Step, what)
						assert.Equal(t, ckr, te.CKR(), what)
						assert.ErrorIs(t, err, pkcs11.Error(ckr), what)

						after, idle := lt.pool()
						lost := lostSession(pkcs11.Error(ckr))
						if lost {
							// The session is dropped, not pooled again. The
							// token said it was gone: make it so.
							var dropped []pkcs11.SessionHandle
							for h := range before {
								if !after[h] {
									dropped = append(dropped, h)
								}
							}
							require.Len(t, dropped, 1, "%s: the failed session is dropped", what)
							require.NoError(t, testCtx(lt.tok).CloseSession(dropped[0]))
						} else {
							assert.Equal(t, before, after, "%s: the session stays in the pool", what)
						}

						// The fault is gone: the next derivation works, on a
						// fresh session if the pool is empty.
						configure()
						again, err := lt.tok.Derive(ctx, c.base, r)
						require.NoError(t, err, "the derivation after %s", what)
						if lost {
							assert.Equal(t, 1+idle, fwd.Calls(t, w, "C_GetSessionInfo"), "%s: the anchor and the idle sessions are checked", what)
							if idle == 0 {
								assert.Equal(t, 1, fwd.Calls(t, w, "C_OpenSession"), "%s: a fresh session", what)
							}
							assert.Zero(t, fwd.Calls(t, w, "C_Login"), "%s: the login was not lost", what)
						}
						assert.Equal(t, objects+1, lt.objects(t), "%s left an object", what)
						kcv, err := lt.tok.CheckValue(ctx, again.Key)
						require.NoError(t, err)
						assert.Equal(t, hex.EncodeToString(wantKCV), hex.EncodeToString(kcv), what)
						require.NoError(t, lt.tok.Destroy(ctx, again.Key))

						// The base key is unchanged.
						k, err := lt.tok.Key(ctx, c.base.Handle)
						require.NoError(t, err)
						assert.Equal(t, *c.base, *k, "%s changed the base key", what)
						assert.Equal(t, wantBaseKCV, baseKCV(), "%s changed the base key's value", what)
					}
				}
			}
			totalFaults += faults
			t.Logf("%d faults injected; calls per derivation %v", faults, nonZero(counts))
		})
	}
}

func nonZero(m map[string]int) string {
	var parts []string
	for _, fn := range callsOf {
		if m[fn] > 0 {
			parts = append(parts, fmt.Sprintf("%s×%d", fn, m[fn]))
		}
	}
	return strings.Join(parts, " ")
}

// TestSessionsLost closes every session of a Token behind its back, as a
// token reset or removal does: the derivation that meets a dead session
// fails naming its step, the next one re-opens the sessions and, on
// SoftHSM2 (which logs out when its last session closes), logs in again
// with the PIN given to Open — once. A C_Login that fails then is never
// retried.
func TestSessionsLost(t *testing.T) {
	ctx := context.Background()
	t.Run("softhsm2", func(t *testing.T) {
		lt, w := softHSM2Wrapped(t, fwd.Config{})
		key := lab.Random(t, 16)
		label := "lost-" + hex.EncodeToString(lab.Random(t, 4))
		base := lt.importKey(t, pkcs11.CKK_AES, key, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
		// SoftHSM2 forgets its object handles when its last session closes:
		// the base key is found again by label, and must be the same key.
		refind := func(tok *Token) {
			t.Helper()
			k, err := tok.FindKey(ctx, label)
			require.NoError(t, err)
			again := *k
			again.Handle = base.Handle
			assert.Equal(t, *base, again, "the base key changed")
			base = k
		}
		data := lab.Random(t, 16)
		r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128}
		want := hex.EncodeToString(refKCV(t, KeyAES128, refEncrypt(t, pkcs11.CKK_AES, key, Encrypt{Cipher: AES, Mode: ECB}, data)))
		derive := func() *Result {
			t.Helper()
			res, err := lt.tok.Derive(ctx, base, r)
			require.NoError(t, err)
			kcv, err := lt.tok.CheckValue(ctx, res.Key)
			require.NoError(t, err)
			assert.Equal(t, want, hex.EncodeToString(kcv))
			assert.True(t, res.Key.Private, "a private key: made while logged in")
			require.NoError(t, lt.tok.Destroy(ctx, res.Key))
			return res
		}
		derive()
		objects := lt.objects(t)

		for round := 1; round <= 2; round++ {
			// Every session of the application gone, and the login with them.
			require.NoError(t, testCtx(lt.tok).CloseAllSessions(lt.tok.SlotID()))
			fwd.Configure(t, w, fwd.Config{})
			_, err := lt.tok.Derive(ctx, base, r)
			require.Error(t, err)
			var te *TokenError
			require.ErrorAs(t, err, &te)
			assert.Equal(t, "derive DK", te.Step)
			assert.Equal(t, uint(pkcs11.CKR_SESSION_HANDLE_INVALID), te.CKR())
			t.Logf("round %d, the derivation that met the dead session: %v", round, err)

			refind(lt.tok)
			derive()
			assert.Equal(t, 1, fwd.Calls(t, w, "C_Login"), "logged in again, once")
			assert.Equal(t, 2, fwd.Calls(t, w, "C_OpenSession"), "the anchor and a pool session")
			assert.Equal(t, objects, lt.objects(t))
		}

		// Now the PIN is refused when the Token logs in again: it says so,
		// and never calls C_Login again.
		require.NoError(t, testCtx(lt.tok).CloseAllSessions(lt.tok.SlotID()))
		fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{{Func: "C_Login", N: 1, CKR: pkcs11.CKR_PIN_INCORRECT}}})
		_, err := lt.tok.Derive(ctx, base, r)
		require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID))
		for i := 0; i < 3; i++ {
			_, err = lt.tok.Derive(ctx, base, r)
			require.Error(t, err)
			var te *TokenError
			require.ErrorAs(t, err, &te)
			assert.Equal(t, "C_Login", te.Call)
			assert.Equal(t, uint(pkcs11.CKR_PIN_INCORRECT), te.CKR())
			assert.NotContains(t, err.Error(), lt.lab.PIN)
		}
		assert.Equal(t, 1, fwd.Calls(t, w, "C_Login"), "a failed C_Login is never retried")
		t.Log(err)

		// Another Token logs in afresh: nothing was left, the base key is as it was.
		other, err := Open(Config{Module: w.Module, Slot: &w.SlotID, PIN: w.PIN})
		require.NoError(t, err)
		defer other.Close()
		lo := &labToken{kind: "softhsm2+fwd", lab: w, tok: other}
		assert.Equal(t, objects, lo.objects(t))
		refind(other)
	})

	t.Run("nss", func(t *testing.T) {
		lt, w := wrapped(t, fwd.Config{})
		key := lab.Random(t, 16)
		base := lt.reKey(t, tokens(t)[1].importKey(t, pkcs11.CKK_AES, key))
		data := lab.Random(t, 32)
		cbc := Encrypt{Cipher: AES, Mode: CBC, IV: lab.Random(t, 16)}
		r := Request{Function: cbc, Data: data, KeyType: KeyAES256, Strategy: MACUnwrap}
		want := hex.EncodeToString(refKCV(t, KeyAES256, refEncrypt(t, pkcs11.CKK_AES, key, cbc, data)))
		derive := func() {
			t.Helper()
			res, err := lt.tok.Derive(ctx, base, r)
			require.NoError(t, err)
			kcv, err := lt.tok.CheckValue(ctx, res.Key)
			require.NoError(t, err)
			assert.Equal(t, want, hex.EncodeToString(kcv))
			require.NoError(t, lt.tok.Destroy(ctx, res.Key))
		}
		// closeAll closes the Token's sessions in the real module (NSS is
		// shared with the other tests: CloseAllSessions would end theirs).
		closeAll := func() {
			all, _ := lt.pool()
			lt.tok.pool.mu.Lock()
			all[lt.tok.rec.anchor] = true
			lt.tok.pool.mu.Unlock()
			for h := range all {
				require.NoError(t, testCtx(lt.tok).CloseSession(h))
			}
		}
		derive()
		objects := lt.objects(t)

		closeAll()
		fwd.Configure(t, w, fwd.Config{})
		_, err := lt.tok.Derive(ctx, base, r)
		require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID))
		assert.Contains(t, err.Error(), "MAC of block 1: C_SignInit")
		derive()
		assert.Equal(t, 2, fwd.Calls(t, w, "C_OpenSession"), "the anchor and a pool session")
		assert.Zero(t, fwd.Calls(t, w, "C_Login"), "no PIN, no login")
		assert.Equal(t, objects, lt.objects(t))

		// Re-opening fails once: that derivation says so; the next works.
		closeAll()
		fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{{Func: "C_OpenSession", N: 1, CKR: pkcs11.CKR_DEVICE_MEMORY}}})
		_, err = lt.tok.Derive(ctx, base, r)
		require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_SESSION_HANDLE_INVALID))
		_, err = lt.tok.Derive(ctx, base, r)
		require.ErrorIs(t, err, pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY))
		var te *TokenError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, "C_OpenSession", te.Call)
		t.Log(err)
		derive()
		assert.Equal(t, objects, lt.objects(t))
		k, err := lt.tok.Key(ctx, base.Handle)
		require.NoError(t, err)
		assert.Equal(t, *base, *k)
	})
}

// TestReadBackFaultIsNoRefusal fails the reading back of DK, with CKRs that
// mean a refusal when the strategy's own calls answer them: Auto reports
// the fault, and does not write the strategy off for the base key — the
// next derivation runs the same (cheapest) strategy.
func TestReadBackFaultIsNoRefusal(t *testing.T) {
	lt, w := wrapped(t, fwd.Config{})
	ctx := context.Background()
	base := lt.reKey(t, tokens(t)[1].importKey(t, pkcs11.CKK_AES, lab.Random(t, 16)))
	r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128}
	objects := lt.objects(t)
	for _, ckr := range []uint{pkcs11.CKR_ATTRIBUTE_VALUE_INVALID, pkcs11.CKR_TEMPLATE_INCONSISTENT, pkcs11.CKR_FUNCTION_NOT_SUPPORTED} {
		fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{{Func: "C_GetAttributeValue", N: 1, CKR: ckr}}})
		_, err := lt.tok.Derive(ctx, base, r)
		require.ErrorIs(t, err, pkcs11.Error(ckr))
		assert.Contains(t, err.Error(), "read DK's attributes")
		assert.Equal(t, objects, lt.objects(t))
		fwd.Configure(t, w, fwd.Config{})
		res, err := lt.tok.Derive(ctx, base, r)
		require.NoError(t, err)
		assert.Equal(t, Native, res.Strategy, "native is not written off after %v", pkcs11.Error(ckr))
		require.NoError(t, lt.tok.Destroy(ctx, res.Key))
	}
}
