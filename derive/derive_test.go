package derive

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// TestBadInput checks every bad input is refused with a typed error before
// any PKCS#11 call, leaving the token's objects as they were.
func TestBadInput(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		aesKey := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
		des3Key := lt.importKey(t, pkcs11.CKK_DES3, lab.Random(t, 24))
		noDerive := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
		// Without CKA_DERIVE, Auto falls back to mac-unwrap: a key that may
		// neither derive nor sign nor unwrap has no strategy at all.
		noUse := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, false), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false))
		hmacKey := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, lab.Random(t, 32))
		ecb := Encrypt{Cipher: AES, Mode: ECB}
		cases := []struct {
			name  string
			base  *Key
			r     Request
			want  error
			field string
		}{
			{"no function", aesKey, Request{Data: make([]byte, 16), KeyType: KeyAES128}, ErrInvalidInput, "kdf"},
			{"no key type", aesKey, Request{Function: ecb, Data: make([]byte, 16)}, ErrInvalidInput, "key-type"},
			{"generic of 0 bytes", aesKey, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyGeneric(0)}, ErrInvalidInput, "key-type"},
			{"empty data", aesKey, Request{Function: ecb, KeyType: KeyAES128}, ErrInvalidInput, "data"},
			{"partial block", aesKey, Request{Function: ecb, Data: make([]byte, 17), KeyType: KeyAES128}, ErrInvalidInput, "data"},
			{"too little data for the key", aesKey, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES256}, ErrInvalidInput, "data"},
			{"des3 data too short for des3 key", des3Key, Request{Function: Encrypt{Cipher: DES3, Mode: ECB}, Data: make([]byte, 16), KeyType: KeyDES3}, ErrInvalidInput, "data"},
			{"ecb with iv", aesKey, Request{Function: Encrypt{Cipher: AES, Mode: ECB, IV: make([]byte, 16)}, Data: make([]byte, 16), KeyType: KeyAES128}, ErrInvalidInput, "iv"},
			{"cbc without iv", aesKey, Request{Function: Encrypt{Cipher: AES, Mode: CBC}, Data: make([]byte, 16), KeyType: KeyAES128}, ErrInvalidInput, "iv"},
			{"cbc with short iv", aesKey, Request{Function: Encrypt{Cipher: AES, Mode: CBC, IV: make([]byte, 8)}, Data: make([]byte, 16), KeyType: KeyAES128}, ErrInvalidInput, "iv"},
			{"des3 cbc with aes-sized iv", des3Key, Request{Function: Encrypt{Cipher: DES3, Mode: CBC, IV: make([]byte, 16)}, Data: make([]byte, 16), KeyType: KeyDES2}, ErrInvalidInput, "iv"},
			{"unknown cipher", aesKey, Request{Function: Encrypt{Mode: ECB}, Data: make([]byte, 16), KeyType: KeyAES128}, ErrInvalidInput, "cipher"},
			{"unknown strategy", aesKey, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES128, Strategy: "magic"}, ErrInvalidInput, "strategy"},
			{"no base key", nil, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES128}, ErrInvalidInput, "base"},
			{"aes function, des3 key", des3Key, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES128}, ErrKeyType, ""},
			{"des3 function, aes key", aesKey, Request{Function: Encrypt{Cipher: DES3, Mode: ECB}, Data: make([]byte, 16), KeyType: KeyDES2}, ErrKeyType, ""},
			{"generic secret base", hmacKey, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES128}, ErrKeyType, ""},
			{"no CKA_DERIVE, native", noDerive, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES128, Strategy: Native}, ErrMissingAttribute, ""},
			{"no CKA_DERIVE, CKA_SIGN or CKA_UNWRAP, auto", noUse, Request{Function: ecb, Data: make([]byte, 16), KeyType: KeyAES128}, ErrMissingAttribute, ""},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				objects := lt.objects(t)
				calls := lt.tok.calls.Load()
				res, err := lt.tok.Derive(context.Background(), c.base, c.r)
				require.Error(t, err)
				assert.Nil(t, res)
				assert.ErrorIs(t, err, c.want)
				if c.field != "" {
					var ie *InputError
					require.ErrorAs(t, err, &ie)
					assert.Equal(t, c.field, ie.Field)
				}
				assert.Equal(t, calls, lt.tok.calls.Load(), "a PKCS#11 call was made for bad input")
				assert.Equal(t, objects, lt.objects(t), "an object was left behind")
			})
		}
	})
}

func TestCheckKeyRefusesWeakerKeys(t *testing.T) {
	r := &Request{KeyType: KeyAES128}
	good := Key{Type: pkcs11.CKK_AES, Len: 16, Sensitive: true}
	assert.NoError(t, checkKey(&good, r))
	for name, mutate := range map[string]func(k *Key){
		"not sensitive": func(k *Key) { k.Sensitive = false },
		"extractable":   func(k *Key) { k.Extractable = true },
		"token object":  func(k *Key) { k.Token = true },
		"wrong type":    func(k *Key) { k.Type = pkcs11.CKK_GENERIC_SECRET },
		"wrong length":  func(k *Key) { k.Len = 32 },
		"unreadable":    func(k *Key) { k.unknown = []uint{pkcs11.CKA_SENSITIVE} },
	} {
		k := good
		mutate(&k)
		err := checkKey(&k, r)
		assert.ErrorIs(t, err, ErrWeakKey, name)
	}
}

func TestCancelledContextMakesNoCall(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		calls := lt.tok.calls.Load()
		_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, calls, lt.tok.calls.Load())
	})
}

// TestConcurrentDerivations derives from many goroutines at once on one Token.
func TestConcurrentDerivations(t *testing.T) {
	forEachToken(t, func(t *testing.T, lt *labToken) {
		ctx := context.Background()
		key := lab.Random(t, 16)
		base := lt.importKey(t, pkcs11.CKK_AES, key)
		objects := lt.objects(t)
		var wg sync.WaitGroup
		errs := make(chan error, 8*25)
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25; i++ {
					data := lab.Random(t, 16)
					res, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128})
					if err != nil {
						errs <- err
						continue
					}
					kcv, err := lt.tok.CheckValue(ctx, res.Key)
					if err == nil && string(kcv) != string(refKCV(t, KeyAES128, refEncrypt(t, pkcs11.CKK_AES, key, Encrypt{Cipher: AES, Mode: ECB}, data))) {
						err = errors.New("check value differs from the reference")
					}
					if err != nil {
						errs <- err
					}
					if err := lt.tok.Destroy(ctx, res.Key); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		assert.Equal(t, objects, lt.objects(t))
	})
}

// TestDestroyForgetsRefusals: what a token refused for a key is forgotten
// when the key is destroyed, since tokens reuse handles.
func TestDestroyForgetsRefusals(t *testing.T) {
	lt := tokens(t)[0] // SoftHSM2 refuses mac-unwrap
	ctx := context.Background()
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
	_, err := lt.tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128})
	require.Error(t, err)
	require.NotNil(t, lt.tok.memo.failed(base.Handle, MACUnwrap, Encrypt{Cipher: AES, Mode: ECB}), "the refusal is remembered")
	require.NoError(t, lt.tok.Destroy(ctx, base))
	assert.Nil(t, lt.tok.memo.failed(base.Handle, MACUnwrap, Encrypt{Cipher: AES, Mode: ECB}), "and forgotten with the key")
	assert.False(t, lt.tok.memo.refusedMechanisms(base.Handle, MACUnwrap, []uint{pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_AES_ECB}))
}

// TestRowRefusalNotRemembered: a refusal about a request's data or
// parameters (NSS softoken answers CKR_MECHANISM_PARAM_INVALID for some
// data) fails that request only: the next request with the same base key
// tries the same strategies again. A refusal that cannot depend on the
// request (CKR_KEY_FUNCTION_NOT_PERMITTED) is remembered. The refusals are
// the token's, made to order by the forwarding module in front of SoftHSM2
// and NSS softoken.
func TestRowRefusalNotRemembered(t *testing.T) {
	for _, kind := range []string{lab.KindSoftHSM2, lab.KindNSS} {
		t.Run(kind, func(t *testing.T) {
			var l *lab.Token
			if kind == lab.KindNSS {
				l = lab.NSS(t)
			} else {
				l = lab.SoftHSM2(t)
			}
			l.Setenv(t)
			w := fwd.Wrap(t, l, fwd.Config{})
			cfg := Config{Module: w.Module, InitArgs: w.InitArgs, Slot: &w.SlotID}
			if w.Login {
				cfg.PIN = w.PIN
			}
			tok, err := Open(cfg)
			require.NoError(t, err)
			t.Cleanup(func() { tok.Close() })
			lt := &labToken{kind: kind + "+fwd", lab: w, tok: tok}
			ctx := context.Background()
			f := Encrypt{Cipher: AES, Mode: ECB}
			for _, c := range []struct {
				ckr      uint
				remember bool
			}{
				{pkcs11.CKR_MECHANISM_PARAM_INVALID, false},
				{pkcs11.CKR_DATA_LEN_RANGE, false},
				{pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, true},
			} {
				base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
				fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{{Func: "C_DeriveKey", N: 1, CKR: c.ckr}}})
				res, err := tok.Derive(ctx, base, Request{Function: f, Data: lab.Random(t, 16), KeyType: KeyAES128})
				if err == nil {
					require.NoError(t, tok.Destroy(ctx, res.Key))
				}
				fwd.Configure(t, w, fwd.Config{})
				if c.remember {
					assert.NotNil(t, tok.memo.failed(base.Handle, Native, f), "%#x is remembered for the key", c.ckr)
					continue
				}
				assert.Nil(t, tok.memo.failed(base.Handle, Native, f), "%#x fails that request only", c.ckr)
				res, err = tok.Derive(ctx, base, Request{Function: f, Data: lab.Random(t, 16), KeyType: KeyAES128, Strategy: Native})
				require.NoError(t, err, "native, after a refusal of another request's parameters")
				require.NoError(t, tok.Destroy(ctx, res.Key))
				res, err = tok.Derive(ctx, base, Request{Function: f, Data: lab.Random(t, 16), KeyType: KeyAES128})
				require.NoError(t, err)
				assert.Equal(t, Native, res.Strategy, "auto tries native again")
				require.NoError(t, tok.Destroy(ctx, res.Key))
			}
		})
	}
}
