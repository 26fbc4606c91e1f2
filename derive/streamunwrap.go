package derive

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/mechanisms"
)

// streamUnwrap is the StreamUnwrap strategy (docs/design.md §3.4).
type streamUnwrap struct{}

func (streamUnwrap) name() Strategy { return StreamUnwrap }

func (streamUnwrap) computes(f Function) bool {
	e, ok := f.(Encrypt)
	return ok && e.Cipher == AES
}

// streamModes are the stream modes whose decryption runs the cipher
// forwards, in order of preference.
var streamModes = []uint{pkcs11.CKM_AES_CTR, pkcs11.CKM_AES_OFB, pkcs11.CKM_AES_CFB128}

func (streamUnwrap) cost(r *Request) int {
	k := blocksFor(AES, r.KeyType)
	if k == 1 {
		return 1
	}
	// k unwraps, k-1 concatenations, and the destruction of the 2k-2
	// intermediates.
	return k + (k - 1) + 2*k - 2
}

// needs names CTR, the first choice: OFB or CFB-128 serve as well.
func (streamUnwrap) needs(Function) ([]uint, []uint) {
	return []uint{pkcs11.CKM_AES_CTR, pkcs11.CKM_CONCATENATE_BASE_AND_KEY}, []uint{pkcs11.CKA_UNWRAP}
}

func (streamUnwrap) flags(Function) []uint { return []uint{pkcs11.CKF_UNWRAP, pkcs11.CKF_DERIVE} }

func (s streamUnwrap) check(t *Token, base *Key, f Function) error {
	var lerr error
	if s.mode(t) == 0 {
		lerr = t.listed(mechUse{streamModes[0], pkcs11.CKF_UNWRAP})
	}
	var missing []string
	if !base.Unwrap {
		missing = append(missing, "CKA_UNWRAP")
	}
	return needsAttrs(base, lerr, "stream-mode unwrap", missing)
}

// mode is the first stream mode the token lists with CKF_UNWRAP, or 0.
func (streamUnwrap) mode(t *Token) uint {
	for _, m := range streamModes {
		if t.listsFor(m, pkcs11.CKF_UNWRAP) {
			return m
		}
	}
	return 0
}

// applies refuses what stream-unwrap cannot compute: CBC chains longer
// than the one block the token computes from IV XOR d_1.
func (streamUnwrap) applies(r *Request) error {
	if f := r.Function.(Encrypt); f.Mode == CBC && blocksFor(AES, r.KeyType) > 1 {
		return fmt.Errorf("stream-unwrap computes CBC for keys of one block only (a %s key needs %d): %w", r.KeyType, blocksFor(AES, r.KeyType), ErrUnsupported)
	}
	return nil
}

func (s streamUnwrap) run(ctx context.Context, sess *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	mode := streamModes[0]
	if m := s.mode(sess.token); m != 0 {
		mode = m
	}
	u := &streamBlocks{sess: sess, base: base, mode: mode, f: r.Function.(Encrypt), data: r.Data, zero: make([]byte, 16)}
	if k := blocksFor(AES, r.KeyType); k > 1 {
		return u.join(ctx, k, tmpl)
	}
	return u.unwrap(0, tmpl)
}

// streamBlocks makes the blocks of DK = E(data, K), E_K(x_i), by
// decrypting the zero block in a stream mode.
type streamBlocks struct {
	sess *session
	base *Key
	mode uint // CKM_AES_CTR, CKM_AES_OFB or CKM_AES_CFB128
	f    Encrypt
	data []byte
	zero []byte // the block unwrapped
}

// input is x_i: block i of the data, XORed with the IV for CBC.
func (u *streamBlocks) input(i int) []byte {
	x := append([]byte(nil), u.data[i*16:(i+1)*16]...)
	if u.f.Mode == CBC {
		for j := range x {
			x[j] ^= u.f.IV[j]
		}
	}
	return x
}

// unwrap makes a key of value E_K(x_i) with template tt.
func (u *streamBlocks) unwrap(i int, tt []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	x := u.input(i)
	var params mechanisms.Params
	var raw []byte
	if u.mode == pkcs11.CKM_AES_CTR {
		p := &mechanisms.AESCTRParams{CounterBits: 128}
		copy(p.CB[:], x)
		params = p
	} else {
		raw = x
	}
	step := fmt.Sprintf("unwrap block %d with %s", i+1, ckm.Name(u.mode))
	if params == nil {
		return u.sess.unwrapKey(step, []*pkcs11.Mechanism{pkcs11.NewMechanism(u.mode, raw)}, u.base.Handle, u.zero, tt)
	}
	var h pkcs11.ObjectHandle
	err := mechanisms.Call(u.mode, params, func(m []*pkcs11.Mechanism) error {
		var err error
		h, err = u.sess.unwrapKey(step, m, u.base.Handle, u.zero, tt)
		return err
	})
	return h, err
}

// join makes DK of k blocks with template tmpl: each block unwrapped into
// an intermediate, then joined with CKM_CONCATENATE_BASE_AND_KEY.
func (u *streamBlocks) join(ctx context.Context, k int, tmpl []*pkcs11.Attribute) (h pkcs11.ObjectHandle, err error) {
	sess := u.sess
	// Intermediates: generic secrets that may only derive, destroyed on
	// every path, panics included. Each holds blocks of DK: if one cannot
	// be destroyed, the derivation fails (and DK is destroyed).
	var made []pkcs11.ObjectHandle
	defer func() {
		for _, o := range made {
			if derr := sess.cleanup("destroy intermediate block key", o); derr != nil && err == nil {
				sess.cleanup("destroy DK after failure", h)
				h, err = 0, derr
			}
		}
	}()
	blocks := make([]pkcs11.ObjectHandle, k)
	for i := 0; i < k; i++ {
		if err := contextDone(ctx); err != nil {
			return 0, err
		}
		h, err := u.unwrap(i, intermediateTemplate(16))
		if err != nil {
			return 0, err
		}
		made = append(made, h)
		blocks[i] = h
	}
	acc := blocks[0]
	for i := 1; i < k; i++ {
		tt := intermediateTemplate(16 * (i + 1))
		if i == k-1 {
			tt = tmpl
		}
		// CONCATENATE_BASE_AND_KEY's parameter is the other key's handle, a
		// CK_OBJECT_HANDLE: no pointer, so plain bytes do.
		other := pkcs11.NewAttribute(0, uint(blocks[i])).Value
		next, err := sess.deriveKey(fmt.Sprintf("join block %d", i+1),
			[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_CONCATENATE_BASE_AND_KEY, other)}, acc, tt)
		if err != nil {
			return 0, err
		}
		if i < k-1 {
			made = append(made, next)
		}
		acc = next
	}
	return acc, nil
}
