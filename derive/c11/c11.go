// Package c11 derives keys for programs that use crypto11
// (github.com/ThalesGroup/crypto11): from a base key that is a
// *crypto11.SecretKey, DK = E(data, K) is computed inside the token by
// p11derive and comes back as a *crypto11.SecretKey, ready for crypto11's
// block modes (NewCBCEncrypterCloser), its AEAD (NewGCM) and, through
// [Block], for anything that takes a cipher.Block. DK never leaves the
// token.
//
//	c11ctx, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: "payments", Pin: pin})
//	tok, err := derive.Open(derive.Config{Module: module, Label: "payments", PIN: pin})
//	d := c11.New(c11ctx, tok)
//	base, err := c11ctx.FindKey(nil, []byte("master"))
//	dk, res, err := d.Derive(ctx, base, derive.Request{
//		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
//		Data:     deviceID,
//		KeyType:  derive.KeyAES128,
//	})
//	aead, err := dk.NewGCM()
//
// # One module, two libraries
//
// crypto11 and p11derive share the module's instance in the process. The
// order matters twice: crypto11.Configure must come first (crypto11 refuses
// a module someone else initialised; p11derive takes it as it is), and the
// derive.Token must be closed before the crypto11.Context, whose Close
// finalises the module when it holds crypto11's last reference to it.
// Behind p11-kit's proxy (p11-kit-proxy.so) each library gets a function
// list of its own, initialised on its own: either order works there,
// crypto11's Close finalises its list only, and keys cross between the
// two by CKA_ID and label (TestUnderProxy).
//
// A derived key is, by default, a session object of one of the Token's
// sessions: it lives until Token.Close, which ends it for crypto11 too. Ask
// for Request.Persistent to keep it in the token. crypto11 blocks in
// Context.Close until its sessions are back: close every BlockModeCloser.
package c11

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/ThalesGroup/crypto11"

	"github.com/p11derive/p11derive/derive"
)

// Deriver derives crypto11 keys from crypto11 keys. Both its crypto11
// context and its Token must be on the same token of the same module.
type Deriver struct {
	c11 *crypto11.Context
	tok *derive.Token
}

// New returns a Deriver that finds keys with c and derives them with tok.
func New(c *crypto11.Context, tok *derive.Token) *Deriver { return &Deriver{c11: c, tok: tok} }

// Key returns p11derive's view of a crypto11 secret key: the same object,
// found by its CKA_ID and CKA_LABEL, which must single it out. Keys are
// matched by identity, never by handle: behind p11-kit's proxy crypto11 and
// p11derive each have a function list of their own, with their own
// sessions, and a handle of one means nothing to the other.
func (d *Deriver) Key(ctx context.Context, k *crypto11.SecretKey) (*derive.Key, error) {
	attrs, err := d.c11.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel})
	if err != nil {
		return nil, fmt.Errorf("p11derive: reading the crypto11 key's CKA_ID and CKA_LABEL: %w", err)
	}
	var sel derive.Selector
	if a := attrs[crypto11.CkaId]; a != nil && len(a.Value) > 0 {
		sel.ID = a.Value
	}
	if a := attrs[crypto11.CkaLabel]; a != nil && len(a.Value) > 0 {
		sel.Label = string(a.Value)
	}
	if sel.ID == nil && sel.Label == "" {
		return nil, fmt.Errorf("p11derive: the crypto11 key has neither CKA_ID nor CKA_LABEL to find it by: %w", derive.ErrNotFound)
	}
	dk, err := d.tok.Find(ctx, sel)
	if errors.Is(err, derive.ErrNotFound) {
		return nil, fmt.Errorf("%w (is the crypto11 context on the same token?)", err)
	}
	return dk, err
}

// Derive computes DK from base and r inside the token, as derive.Token.Derive
// does, and returns it as a crypto11 key along with the derivation's result.
//
// crypto11 finds keys by label: DK gets r.Label, which must not be the label
// of another key, or a fresh random one ("p11derive-" and 16 hex digits).
// DK's type must be one crypto11 knows: AES, DES3 or a generic secret (not
// DES or DES2). On error nothing is left behind.
func (d *Deriver) Derive(ctx context.Context, base *crypto11.SecretKey, r derive.Request) (*crypto11.SecretKey, *derive.Result, error) {
	if _, ok := crypto11.Ciphers[int(r.KeyType.CKK())]; !ok {
		return nil, nil, &derive.InputError{Field: "key-type", Problem: fmt.Sprintf("crypto11 has no cipher for %v keys (AES, DES3 and generic secrets only)", r.KeyType)}
	}
	if r.Label == "" {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
		r.Label = "p11derive-" + hex.EncodeToString(b)
	} else if _, err := d.tok.FindKey(ctx, r.Label); err == nil || errors.Is(err, derive.ErrAmbiguous) {
		return nil, nil, &derive.InputError{Field: "label", Problem: fmt.Sprintf("a key labelled %q exists already: crypto11 finds keys by label", r.Label)}
	} else if !errors.Is(err, derive.ErrNotFound) {
		return nil, nil, err
	}
	k, err := d.Key(ctx, base)
	if err != nil {
		return nil, nil, err
	}
	res, err := d.tok.Derive(ctx, k, r)
	if err != nil {
		return nil, nil, err
	}
	keys, err := d.c11.FindKeys(nil, []byte(r.Label))
	if err == nil && len(keys) != 1 {
		err = fmt.Errorf("crypto11 finds %d keys labelled %q", len(keys), r.Label)
	}
	if err != nil {
		d.tok.Destroy(context.WithoutCancel(ctx), res.Key)
		return nil, nil, fmt.Errorf("p11derive: handing DK to crypto11: %w", err)
	}
	return keys[0], res, nil
}

// Block returns k as a cipher.Block, for the cipher package's modes and
// anything else that takes one. Each Encrypt or Decrypt is one block in the
// token (a CBC operation from a zero IV over one block: C_EncryptInit,
// C_EncryptUpdate, C_EncryptFinal): right for a few blocks; for bulk data use
// k.NewCBCEncrypterCloser or k.NewGCM. Like crypto11's block modes, it
// panics if the token fails.
func Block(k *crypto11.SecretKey) (cipher.Block, error) {
	if k.Cipher == nil || !k.Cipher.Encrypt || k.Cipher.CBCMech == 0 {
		return nil, errors.New("p11derive: not a block cipher key")
	}
	return block{k}, nil
}

type block struct{ k *crypto11.SecretKey }

func (b block) BlockSize() int { return b.k.Cipher.BlockSize }

func (b block) Encrypt(dst, src []byte) { b.crypt(dst, src, b.k.NewCBCEncrypterCloser) }

func (b block) Decrypt(dst, src []byte) { b.crypt(dst, src, b.k.NewCBCDecrypterCloser) }

func (b block) crypt(dst, src []byte, mode func(iv []byte) (crypto11.BlockModeCloser, error)) {
	n := b.BlockSize()
	if len(src) < n || len(dst) < n {
		panic("p11derive/c11: input or output not a full block")
	}
	m, err := mode(make([]byte, n))
	if err != nil {
		panic(err)
	}
	defer m.Close()
	m.CryptBlocks(dst[:n], src[:n])
}
