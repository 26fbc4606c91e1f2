package derive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// The bounded session pool (Config.MaxSessions), tested without timing:
// the Token's onWait hook says when an operation has started to wait, and
// the forwarder plays a token with a session limit.

// waitHook makes tok signal on the returned channel each time an
// operation starts to wait for a session.
func waitHook(tok *Token) <-chan struct{} {
	ch := make(chan struct{}, 16)
	tok.pool.mu.Lock()
	tok.pool.onWait = func() { ch <- struct{}{} }
	tok.pool.mu.Unlock()
	return ch
}

// deriveOne derives an AES-128 key natively from base and destroys it.
func deriveOne(ctx context.Context, tok *Token, base *Key) error {
	res, err := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: []byte("0123456789abcdef"), KeyType: KeyAES128})
	if err != nil {
		return err
	}
	return tok.Destroy(ctx, res.Key)
}

// TestPoolBoundFromToken: a token that states ulMaxSessionCount 3 gives a
// pool of 2 (the anchor holds the third); a third operation waits for a
// session to be released, and gets it, instead of opening one; a waiter
// whose context ends returns its error.
func TestPoolBoundFromToken(t *testing.T) {
	lt, w := softHSM2Wrapped(t, fwd.Config{MaxSessions: 3})
	tok := lt.tok
	require.Equal(t, 2, tok.MaxSessions())
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
	waiting := waitHook(tok)
	ctx := context.Background()

	a, err := tok.acquire(ctx)
	require.NoError(t, err)
	b, err := tok.acquire(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, fwd.Calls(t, w, "C_OpenSession"), "the anchor and two pooled sessions")

	done := make(chan error)
	go func() { done <- deriveOne(ctx, tok, base) }()
	<-waiting // the derivation waits: both sessions are lent
	tok.release(a)
	require.NoError(t, <-done, "the derivation ran on the released session")
	require.Equal(t, 3, fwd.Calls(t, w, "C_OpenSession"), "no session opened past the bound")

	// A waiter whose context is cancelled gives up with the context's error.
	a, err = tok.acquire(ctx)
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- deriveOne(cctx, tok, base) }()
	<-waiting
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)

	// Several waiters: each is served as sessions come back, none is lost.
	for i := 0; i < 3; i++ {
		go func() { done <- deriveOne(ctx, tok, base) }()
		<-waiting
	}
	tok.release(a)
	tok.release(b)
	for i := 0; i < 3; i++ {
		require.NoError(t, <-done)
	}
	all, idle := lt.pool()
	require.Len(t, all, 2)
	require.Equal(t, 2, idle)
	require.Equal(t, 3, fwd.Calls(t, w, "C_OpenSession"))
}

// TestPoolSessionCountShrinks: a token that answers CKR_SESSION_COUNT
// (more sessions than it states, or other applications holding some)
// lowers the bound to the sessions the Token has; the operation waits for
// one of them instead of failing.
func TestPoolSessionCountShrinks(t *testing.T) {
	l := lab.SoftHSM2(t)
	l.Setenv(t)
	w := fwd.Wrap(t, l, fwd.Config{MaxSessions: 3})
	tok, err := Open(Config{Module: w.Module, Slot: &w.SlotID, PIN: w.PIN, MaxSessions: 10})
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	lt := &labToken{kind: "softhsm2+fwd", lab: w, tok: tok}
	require.Equal(t, 10, tok.MaxSessions(), "the configured bound wins over the token's")
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
	waiting := waitHook(tok)
	ctx := context.Background()

	a, err := tok.acquire(ctx)
	require.NoError(t, err)
	b, err := tok.acquire(ctx)
	require.NoError(t, err)
	done := make(chan error)
	go func() { done <- deriveOne(ctx, tok, base) }()
	<-waiting // C_OpenSession answered CKR_SESSION_COUNT: the bound fell to 2
	require.Equal(t, 2, tok.MaxSessions())
	tok.release(b)
	require.NoError(t, <-done)
	tok.release(a)
	require.Equal(t, 4, fwd.Calls(t, w, "C_OpenSession"), "the anchor, two sessions, one refused")
	require.NoError(t, deriveOne(ctx, tok, base))
	all, _ := lt.pool()
	require.Len(t, all, 2)
}

// TestPoolSessionCountNoSession: CKR_SESSION_COUNT while the Token has no
// pooled session open is an error: there is nothing to wait for.
func TestPoolSessionCountNoSession(t *testing.T) {
	lt, _ := softHSM2Wrapped(t, fwd.Config{Faults: []fwd.Fault{{Func: "C_OpenSession", N: 2, From: true, CKR: pkcs11.CKR_SESSION_COUNT}}})
	_, err := lt.tok.acquire(context.Background())
	var te *TokenError
	require.True(t, errors.As(err, &te), "%v", err)
	require.Equal(t, uint(pkcs11.CKR_SESSION_COUNT), te.CKR())
}

// TestPoolBoundSoftHSM2: on SoftHSM2 itself (which states no bound:
// ulMaxSessionCount CK_EFFECTIVELY_INFINITE, so the default is none), a
// Token bounded to 2 sessions runs 8 goroutines of derivations on at most
// 2 sessions, each with the right key.
func TestPoolBoundSoftHSM2(t *testing.T) {
	l := lab.SoftHSM2(t)
	l.Setenv(t)
	free, err := Open(Config{Module: l.Module, Slot: &l.SlotID, PIN: l.PIN})
	require.NoError(t, err)
	require.Zero(t, free.MaxSessions(), "SoftHSM2 states no bound")
	free.Close()

	tok, err := Open(Config{Module: l.Module, Slot: &l.SlotID, PIN: l.PIN, MaxSessions: 2})
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	lt := &labToken{kind: "softhsm2", lab: l, tok: tok}
	key := lab.Random(t, 16)
	base := lt.importKey(t, pkcs11.CKK_AES, key)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				data := []byte("0123456789abcdef")
				data[0] = byte(g*25 + i)
				res, err := tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128, Extractable: true})
				if err != nil {
					errs <- err
					return
				}
				all, _ := lt.pool()
				if len(all) > 2 {
					errs <- errors.New("more than 2 sessions open")
				}
				kcv, err := tok.CheckValue(ctx, res.Key)
				if err != nil {
					errs <- err
					return
				}
				if want := refKCV(t, KeyAES128, refEncrypt(t, pkcs11.CKK_AES, key, Encrypt{Cipher: AES, Mode: ECB}, data)); !bytes.Equal(kcv, want) {
					errs <- fmt.Errorf("DK's check value %x, want %x", kcv, want)
				}
				if err := tok.Destroy(ctx, res.Key); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	all, idle := lt.pool()
	require.LessOrEqual(t, len(all), 2)
	require.Equal(t, len(all), idle)
}

// The pool's books are pure logic, tested directly: the bound on places,
// the waiters served first come first served, a waiter whose context ends
// after it was woken passing the wake-up on, a lost session forgotten and
// its loss counted, and Close waking every waiter.
func TestPoolBooks(t *testing.T) {
	p := &pool{all: map[pkcs11.SessionHandle]bool{}, limit: 2}
	p.mu.Lock()
	_, ok := p.takeLocked()
	require.False(t, ok, "nothing idle")
	require.True(t, p.reserveLocked())
	require.True(t, p.reserveLocked())
	require.False(t, p.reserveLocked(), "the bound counts the places reserved")
	p.opening = 0
	p.all[1], p.all[2] = true, true
	require.False(t, p.reserveLocked(), "and the sessions open")
	p.mu.Unlock()

	// Two waiters, in order; the first gives up after it was woken: the
	// second gets the wake-up.
	started := make(chan struct{}, 2)
	p.onWait = func() { started <- struct{}{} }
	ctx1, cancel1 := context.WithCancel(context.Background())
	first, second := make(chan error), make(chan error)
	p.mu.Lock()
	go func() { first <- p.wait(ctx1) }()
	<-started
	p.mu.Lock()
	go func() { second <- p.wait(context.Background()) }()
	<-started
	p.mu.Lock()
	require.Len(t, p.waiters, 2)
	p.wakeLocked() // the first is woken...
	cancel1()      // ...and (maybe) gives up before it sees it
	p.mu.Unlock()
	if err := <-first; err != nil {
		require.ErrorIs(t, err, context.Canceled)
		require.NoError(t, <-second, "the wake-up passed on")
	} else {
		p.forget(2) // a place is free: the second is woken
		require.NoError(t, <-second)
	}

	// put keeps a live session, forgets a lost one and counts the loss.
	s := &session{h: 1, calls: 3, strategy: Native, lost: 0}
	p.put(s)
	require.Equal(t, []*session{s}, p.idle)
	require.Zero(t, s.calls, "reset for the next operation")
	p.mu.Lock()
	got, ok := p.takeLocked()
	p.mu.Unlock()
	require.True(t, ok)
	require.Same(t, s, got)
	s.lost = lossSession
	p.put(s)
	require.Empty(t, p.idle)
	require.False(t, p.all[1], "forgotten")
	require.Equal(t, uint64(1), p.losses)
	p.put(&session{h: 3, lost: lossLogin})
	require.Equal(t, uint64(2), p.losses, "a lost login counts too")
	require.Len(t, p.idle, 1, "its session is kept")

	// Close wakes every waiter.
	p.limit = len(p.all) + p.opening
	p.mu.Lock()
	go func() { first <- p.wait(context.Background()) }()
	<-started
	p.mu.Lock()
	all := p.closeLocked()
	p.mu.Unlock()
	require.NoError(t, <-first)
	require.NotNil(t, all)
	require.True(t, p.closed)
	require.Nil(t, p.idle)
}

func TestTokenLimit(t *testing.T) {
	require.Equal(t, 0, tokenLimit(pkcs11.CK_EFFECTIVELY_INFINITE))
	require.Equal(t, 0, tokenLimit(pkcs11.CK_UNAVAILABLE_INFORMATION))
	require.Equal(t, 1, tokenLimit(1), "at least 1")
	require.Equal(t, 2, tokenLimit(3), "the anchor aside")
}
