package derive

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// afterDerive is work done on DK in the session that made it, once it is
// read back and checked, before the session goes back to the pool. An
// error destroys DK (runStrategy's cleanup) and fails the derivation as
// it is, never as a refusal of the strategy.
type afterDerive interface {
	run(ctx context.Context, s *session, dk *Key) error
	// destroyed reports whether run destroyed DK (then nothing is left
	// to clean up, error or not).
	destroyed() bool
}

// afterError carries an afterDerive's error through Derive's strategy
// loop, which must not take it for a refusal (it has no Unwrap).
type afterError struct{ err error }

func (e *afterError) Error() string { return e.err.Error() }

// Wrapped is what DeriveAndWrap gives besides the Result: DK's check value
// and DK wrapped.
type Wrapped struct {
	// KCV is DK's check value: the first 3 bytes of E_DK(0^n), ECB (as
	// CheckValue).
	KCV []byte
	// Key is DK wrapped under the wrapping key.
	Key []byte
}

// DeriveAndWrap derives DK as Derive does, computes its check value as
// CheckValue does, wraps it under wrapping with mechanism and param as
// Wrap does, and destroys it as Destroy does: the same PKCS#11 calls, in
// one session of the pool instead of four. DK is a session key, sensitive
// and extractable (to be wrapped) with CKA_ENCRYPT only (for its check
// value), whatever r.Extractable and r.Usage say: it never outlives the
// call, and a wrapped key carries its value, not its attributes. A
// persistent r is refused before any call. DK is destroyed on every path;
// the Result's Key names it as it was. With a Config.Logger, it is Derive,
// CheckValue, Wrap and Destroy, each as logged.
func (t *Token) DeriveAndWrap(ctx context.Context, base *Key, r Request, wrapping *Key, mechanism uint, param []byte) (*Result, *Wrapped, error) {
	if wrapping == nil {
		return nil, nil, inputErr("key", "no key given")
	}
	if r.Persistent {
		return nil, nil, inputErr("persistent", "DeriveAndWrap makes a session key, destroyed once wrapped: a persistent key is for Derive")
	}
	r.Extractable, r.Usage = true, UseEncrypt
	if t.log != nil {
		return t.deriveAndWrapApart(ctx, base, r, wrapping, mechanism, param)
	}
	// One allocation for the derivation's memory and the wrap's.
	m := &struct {
		d deriveMem
		w wrapAfter
	}{}
	w := &m.w
	w.wrapping, w.mech, w.param = wrapping, mechanism, param
	m.d.then = w
	res, err := t.deriveInto(ctx, base, r, &m.d)
	if ae, ok := err.(*afterError); ok {
		err = ae.err
	}
	if err != nil {
		return nil, nil, err
	}
	return res, &w.out, nil
}

// deriveAndWrapApart is DeriveAndWrap by the four methods.
func (t *Token) deriveAndWrapApart(ctx context.Context, base *Key, r Request, wrapping *Key, mechanism uint, param []byte) (_ *Result, _ *Wrapped, err error) {
	res, err := t.Derive(ctx, base, r)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if derr := t.Destroy(context.WithoutCancel(ctx), res.Key); derr != nil && err == nil {
			err = derr
		}
	}()
	kcv, err := t.CheckValue(ctx, res.Key)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	wrapped, err := t.Wrap(ctx, wrapping, res.Key, mechanism, param)
	if err != nil {
		return nil, nil, err
	}
	return res, &Wrapped{KCV: kcv, Key: wrapped}, nil
}

// wrapAfter is DeriveAndWrap's work on DK: CheckValue's, Wrap's and
// Destroy's, in DK's session.
type wrapAfter struct {
	wrapping *Key
	mech     uint
	param    []byte
	out      Wrapped
	gone     bool     // DK is destroyed
	kcv      [80]byte // room for the block and what tokens answer (see encrypt)
	wrapped  [96]byte // room for a key of up to 48 bytes wrapped (see wrapRoom)
}

func (w *wrapAfter) run(ctx context.Context, s *session, k *Key) error {
	mech, n, err := checkValueMechanism(k)
	if err != nil {
		return err
	}
	if err := checkWrap(w.wrapping, k); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.kcvWrapDestroy(s, k, mech, n)
}

// kcvWrapDestroy computes k's check value (C_EncryptInit, C_Encrypt of a
// zero block with mech), wraps it (C_WrapKey) and destroys it
// (C_DestroyObject): four calls in one crossing, each counted and any
// failure named as CheckValue, Wrap and Destroy name theirs.
func (w *wrapAfter) kcvWrapDestroy(s *session, k *Key, mech uint, n int) error {
	var zero [16]byte
	out := w.wrapped[:]
	if room := wrapRoom(k); room <= len(out) {
		out = out[:room]
	} else {
		out = make([]byte, room)
	}
	kn, wn, made, rv := s.ck.KCVWrapDestroy(uint(s.h), mech, zero[:n], w.kcv[:n+64], w.mech, w.param,
		uint(w.wrapping.Handle), uint(k.Handle), out)
	s.calls += made
	if rv != pkcs11.CKR_OK {
		switch made {
		case 1:
			return s.fail("check value", "C_EncryptInit", pkcs11.Error(rv))
		case 2:
			return s.fail("check value", "C_Encrypt", pkcs11.Error(rv))
		case 3:
			return w.wrapApart(s, k, rv, wn, kn)
		}
		err := s.fail("destroy key", "C_DestroyObject", pkcs11.Error(rv))
		err.(*TokenError).Step += " " + k.name()
		return err
	}
	if kn < 3 {
		w.gone = true // destroyed: nothing for the caller to clean up
		return s.fail("check value", "C_Encrypt", fmt.Errorf("%d bytes of output", kn))
	}
	w.out.KCV, w.out.Key = w.kcv[:3:3], out[:wn]
	s.token.memo.forget(k.Handle)
	w.gone = true
	return nil
}

// wrapApart finishes after C_WrapKey answered rv in kcvWrapDestroy (the
// check value made, kn bytes): a token that needs more room than given
// (CKR_BUFFER_TOO_SMALL, wn) wraps again with that room, as Wrap does, and
// DK is then destroyed in a call of its own.
func (w *wrapAfter) wrapApart(s *session, k *Key, rv uint, wn, kn int) error {
	err := error(pkcs11.Error(rv))
	var wrapped []byte
	if rv == pkcs11.CKR_BUFFER_TOO_SMALL && wn > wrapRoom(k) && wn <= 1<<16 {
		out := make([]byte, wn)
		s.calls++
		n, rv := s.ck.WrapKey(uint(s.h), w.mech, w.param, uint(w.wrapping.Handle), uint(k.Handle), out)
		err, wrapped = ckErr(rv), out[:n]
	}
	if err != nil {
		return s.fail("wrap key "+k.name()+" under "+w.wrapping.name(), "C_WrapKey", err)
	}
	if kn < 3 {
		return s.fail("check value", "C_Encrypt", fmt.Errorf("%d bytes of output", kn))
	}
	if err := s.destroy("destroy key", k.Handle); err != nil {
		err.(*TokenError).Step += " " + k.name()
		return err
	}
	w.out.KCV, w.out.Key = w.kcv[:3:3], wrapped
	s.token.memo.forget(k.Handle)
	w.gone = true
	return nil
}

func (w *wrapAfter) destroyed() bool { return w.gone }

// checkWrap is Wrap's check of its keys: k extractable, wrapping with
// CKA_WRAP (as far as the token said).
func checkWrap(wrapping, k *Key) error {
	if !k.Extractable && k.known(pkcs11.CKA_EXTRACTABLE) {
		return &KeyError{Key: k.name(), Reason: ErrMissingAttribute, Problem: "a wrapped key needs CKA_EXTRACTABLE"}
	}
	if !wrapping.Wrap && wrapping.known(pkcs11.CKA_WRAP) {
		return &KeyError{Key: wrapping.name(), Reason: ErrMissingAttribute, Problem: "a wrapping key needs CKA_WRAP"}
	}
	return nil
}

// wrapRoom is the room Wrap gives k wrapped: the key, plus an
// IV/integrity block and padding (RFC 3394 adds 8 bytes, RFC 5649 up to
// 15, CBC-PAD a block, GCM a tag).
func wrapRoom(k *Key) int {
	if k.Len > 0 {
		return k.Len + 48
	}
	return 1024
}
