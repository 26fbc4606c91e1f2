package derive

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// soakGoroutines derive at once in the concurrency tests.
const soakGoroutines = 16

// soakEnv sets the derivations per goroutine of TestConcurrentMixed: `make
// soak` sets it to 10000 (16 × 10,000 on each token); by default the test
// is short enough for `go test -race` in CI.
const soakEnv = "P11DERIVE_SOAK"

func soakN(t *testing.T) int {
	n := 25
	if s := os.Getenv(soakEnv); s != "" {
		var err error
		n, err = strconv.Atoi(s)
		require.NoError(t, err, soakEnv)
	}
	return n
}

// mixCase is one kind of derivation of the mix: a function, a strategy,
// the base key and how DK is computed in software from the data.
type mixCase struct {
	st   Strategy
	f    Function
	base *Key
	n    int // bytes of data
	kt   KeyType
	ref  func(data []byte) []byte
}

// TestConcurrentMixed derives from 16 goroutines at once, each running the
// mix of strategies the token has, with fresh data every time: every DK is
// checked against the software reference (by check value), then destroyed.
// No error, no object left (the token's object count is back where it
// started), no race (under -race), and the pool holds no more sessions than
// there were goroutines.
func TestConcurrentMixed(t *testing.T) {
	n := soakN(t)
	forEachToken(t, func(t *testing.T, lt *labToken) {
		if lt.kind == "nssdb" {
			t.Skip("NSS softoken's crypto slot stands for NSS")
		}
		ctx := context.Background()
		aesKey, des3Key, genKey := lab.Random(t, 32), lab.Random(t, 24), lab.Random(t, 32)
		aes := lt.importKey(t, pkcs11.CKK_AES, aesKey)
		des3 := lt.importKey(t, pkcs11.CKK_DES3, des3Key)
		iv16, iv8 := lab.Random(t, 16), lab.Random(t, 8)
		enc := func(ckk uint, key []byte, f Encrypt) func([]byte) []byte {
			return func(data []byte) []byte { return refEncrypt(t, ckk, key, f, data) }
		}
		aesECB, aesCBC := Encrypt{Cipher: AES, Mode: ECB}, Encrypt{Cipher: AES, Mode: CBC, IV: iv16}
		des3ECB, des3CBC := Encrypt{Cipher: DES3, Mode: ECB}, Encrypt{Cipher: DES3, Mode: CBC, IV: iv8}
		mix := []mixCase{
			{Native, aesECB, aes, 32, KeyAES256, enc(pkcs11.CKK_AES, aesKey, aesECB)},
			{Native, aesCBC, aes, 16, KeyAES128, enc(pkcs11.CKK_AES, aesKey, aesCBC)},
			{Native, des3ECB, des3, 24, KeyDES3, enc(pkcs11.CKK_DES3, des3Key, des3ECB)},
			{Native, des3CBC, des3, 16, KeyDES2, enc(pkcs11.CKK_DES3, des3Key, des3CBC)},
		}
		if lt.kind == "nss" {
			gen := lt.importKey(t, pkcs11.CKK_GENERIC_SECRET, genKey)
			kdf := SP800108{Mode: SP800108Counter, PRF: AESCMAC}
			mix = append(mix,
				mixCase{MACUnwrap, aesCBC, aes, 32, KeyAES256, enc(pkcs11.CKK_AES, aesKey, aesCBC)},
				mixCase{CMACUnwrap, aesECB, aes, 16, KeyAES128, enc(pkcs11.CKK_AES, aesKey, aesECB)},
				mixCase{MACUnwrap, des3CBC, des3, 24, KeyDES3, enc(pkcs11.CKK_DES3, des3Key, des3CBC)},
				mixCase{Unwrap, Decrypt{Cipher: AES, Mode: ECB}, aes, 16, KeyAES128, func(data []byte) []byte {
					out := make([]byte, 16)
					refBlock(t, pkcs11.CKK_AES, aesKey).Decrypt(out, data)
					return out
				}},
				mixCase{Native, kdf, aes, 24, KeyAES256, func(data []byte) []byte { return refSP800108(t, kdf, aesKey, data, 32) }},
				mixCase{Native, SHA256Concat{}, gen, 20, KeyAES128, func(data []byte) []byte {
					sum := sha256.Sum256(append(append([]byte{}, genKey...), data...))
					return sum[:]
				}},
			)
		}
		objects := lt.objects(t)
		var (
			wg       sync.WaitGroup
			failures atomic.Int64
			done     atomic.Int64
			mu       sync.Mutex
			first    []string
		)
		fail := func(format string, args ...any) {
			if failures.Add(1) <= 5 {
				mu.Lock()
				first = append(first, fmt.Sprintf(format, args...))
				mu.Unlock()
			}
		}
		rssStart := residentMB()
		start := time.Now()
		for g := 0; g < soakGoroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < n; i++ {
					c := mix[(g+i)%len(mix)]
					data := make([]byte, c.n)
					rand.Read(data)
					res, err := lt.tok.Derive(ctx, c.base, Request{Function: c.f, Data: data, KeyType: c.kt, Strategy: c.st})
					if err != nil {
						fail("%s %s: %v", c.st, c.f.Name(), err)
						continue
					}
					kcv, err := lt.tok.CheckValue(ctx, res.Key)
					if err != nil {
						fail("check value: %v", err)
					} else if want := refKCV(t, c.kt, c.ref(data)[:c.kt.n]); string(kcv) != string(want) {
						fail("%s %s: DK's check value %x, the reference's %x", c.st, c.f.Name(), kcv, want)
					}
					if err := lt.tok.Destroy(ctx, res.Key); err != nil {
						fail("destroy: %v", err)
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		for _, f := range first {
			t.Error(f)
		}
		assert.Zero(t, failures.Load(), "failures")
		assert.Equal(t, int64(soakGoroutines*n), done.Load())
		assert.Equal(t, objects, lt.objects(t), "objects left behind")
		all, idle := lt.pool()
		assert.LessOrEqual(t, len(all), soakGoroutines+1, "sessions in the pool")
		assert.Equal(t, len(all), idle, "every session back in the pool")
		t.Logf("%d goroutines × %d derivations (%d kinds) in %v: %.0f derivations/s, %d sessions pooled, %d failures, resident memory %.0f MB then %.0f MB",
			soakGoroutines, n, len(mix), elapsed.Round(time.Millisecond), float64(soakGoroutines*n)/elapsed.Seconds(), len(all), failures.Load(),
			rssStart, residentMB())
	})
}

// TestConcurrentLoginLost logs the application out of SoftHSM2 (as
// another library of the process may), then lets 16 goroutines derive at
// once: those that meet the lost login fail with CKR_USER_NOT_LOGGED_IN,
// the Token logs in again with its PIN exactly once whatever the number of
// goroutines that saw the loss, and every derivation after that works.
func TestConcurrentLoginLost(t *testing.T) {
	lt, w := softHSM2Wrapped(t, fwd.Config{})
	ctx := context.Background()
	key := lab.Random(t, 16)
	// A public token object: it stays usable while logged out, so that the
	// derivations of private DKs are what the lost login stops.
	base := lt.importKey(t, pkcs11.CKK_AES, key, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false))
	ecb := Encrypt{Cipher: AES, Mode: ECB}
	objects := lt.objects(t)
	for round := 1; round <= 3; round++ {
		require.NoError(t, withSession(lt.tok, func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error { return c.Logout(s) }))
		fwd.Configure(t, w, fwd.Config{})
		var (
			wg       sync.WaitGroup
			lost, ok atomic.Int64
			start    = make(chan struct{})
			other    = make(chan error, soakGoroutines)
		)
		for g := 0; g < soakGoroutines; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 20; i++ {
					data := make([]byte, 16)
					rand.Read(data)
					res, err := lt.tok.Derive(ctx, base, Request{Function: ecb, Data: data, KeyType: KeyAES128})
					if errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)) && i == 0 {
						lost.Add(1)
						continue
					}
					if err == nil && !res.Key.Private {
						err = errors.New("DK is not private: made while logged out")
					}
					if err == nil {
						err = lt.tok.Destroy(ctx, res.Key)
					}
					if err != nil {
						other <- err
						return
					}
					ok.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(other)
		for err := range other {
			t.Error(err)
		}
		logins := fwd.Calls(t, w, "C_Login")
		t.Logf("round %d: %d derivations, %d met the lost login, %d C_Login", round, ok.Load(), lost.Load(), logins)
		assert.NotZero(t, lost.Load(), "the lost login was seen")
		assert.Equal(t, 1, logins, "one C_Login per loss")
		assert.Equal(t, objects, lt.objects(t))
	}
	kcv, err := lt.tok.CheckValue(ctx, base)
	require.NoError(t, err)
	assert.Equal(t, hex.EncodeToString(refKCV(t, KeyAES128, key)), hex.EncodeToString(kcv))
}

// residentMB is the process's resident memory in MB (Linux), or -1.
func residentMB() float64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	var size, rss int64
	if _, err := fmt.Sscan(string(b), &size, &rss); err != nil {
		return -1
	}
	return float64(rss*int64(os.Getpagesize())) / (1 << 20)
}
