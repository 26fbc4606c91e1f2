package derive

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
)

// macUnwrap computes DK = E(data, K) without any derive mechanism.
//
// Plain CBC-MAC from a zero IV over x || 0^n is E_K(E_K(x)) when x is one
// block, and for the CBC chain c_0 = IV, c_i = E_K(c_(i-1) XOR d_i),
//
//	w_i = CBC-MAC_K((IV XOR d_1) || d_2 || ... || d_i || 0^n) = E_K(c_i)
//
// (for ECB, w_i = CBC-MAC_K(d_i || 0^n) = E_K(E_K(d_i))). Then
//
//	C_UnwrapKey(K, CKM_<cipher>_ECB, w_1 || ... || w_k) = c_1 || ... || c_k = DK
//
// in one call. The host sees only w_i: DK encrypted under K, which is what
// C_UnwrapKey exists to take. k is the number of blocks the output key
// needs; the token truncates the unwrapped value to CKA_VALUE_LEN.
//
// The chain (macChain) is shared with cmac-unwrap (cmacunwrap.go), which
// appends the CMAC subkey K1 where this strategy appends the zero block.
type macUnwrap struct{}

func (macUnwrap) name() Strategy { return MACUnwrap }

func (macUnwrap) computes(f Function) bool {
	_, ok := f.(Encrypt)
	return ok
}

func (macUnwrap) cost(r *Request) int {
	k := blocksFor(r.Function.(Encrypt).Cipher, r.KeyType)
	return 2*k + 1 // C_SignInit + C_Sign per block, C_UnwrapKey
}

// mechanisms are the MAC and ECB mechanisms for c.
func (macUnwrap) mechanisms(c Cipher) (mac, ecb uint) {
	switch c {
	case AES:
		return pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_AES_ECB
	case DES3:
		return pkcs11.CKM_DES3_MAC_GENERAL, pkcs11.CKM_DES3_ECB
	default:
		return pkcs11.CKM_DES_MAC_GENERAL, pkcs11.CKM_DES_ECB
	}
}

func (m macUnwrap) needs(f Function) ([]uint, []uint) {
	mac, ecb := m.mechanisms(f.(Encrypt).Cipher)
	return []uint{mac, ecb}, []uint{pkcs11.CKA_SIGN, pkcs11.CKA_UNWRAP}
}

// flags: the MAC signs; ECB unwraps.
func (macUnwrap) flags(Function) []uint { return []uint{pkcs11.CKF_SIGN, pkcs11.CKF_UNWRAP} }

func (m macUnwrap) check(t *Token, base *Key, f Function) error {
	mac, ecb := m.mechanisms(f.(Encrypt).Cipher)
	return macCheck(t, base, mac, ecb, m.flags(f), false)
}

func (m macUnwrap) run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	f := r.Function.(Encrypt)
	n := f.Cipher.BlockSize()
	mac, ecb := m.mechanisms(f.Cipher)
	// The MAC's parameter: CK_MAC_GENERAL_PARAMS = n (a CK_ULONG).
	var param [8]byte
	binary.NativeEndian.PutUint64(param[:], uint64(n))
	var zero [16]byte
	return macChain(ctx, s, base, r, tmpl, mac, param[:], ecb, zero[:n])
}

// macCheck is the check of both MAC strategies: mac signs and ecb unwraps
// (and, for CMAC, encrypts L); the base key needs CKA_SIGN and CKA_UNWRAP,
// and CKA_ENCRYPT when encrypt is set.
func macCheck(t *Token, base *Key, mac, ecb uint, fl []uint, encrypt bool) error {
	lerr := t.listed(mechUse{mac, fl[0]}, mechUse{ecb, fl[1]})
	var missing []string
	if !base.Sign {
		missing = append(missing, "CKA_SIGN")
	}
	if !base.Unwrap {
		missing = append(missing, "CKA_UNWRAP")
	}
	if encrypt && !base.Encrypt {
		missing = append(missing, "CKA_ENCRYPT")
	}
	if len(missing) == 0 {
		return lerr // the hot path: no name built
	}
	return needsAttrs(base, lerr, ckm.Name(mac)+" then "+ckm.Name(ecb)+" unwrap", missing)
}

// macChain runs the chain of both MAC strategies: for each of DK's k
// blocks, w_i = MAC_K(chain input so far || pad) with mechanism mac and its
// parameter param, then one C_UnwrapKey of w_1 || ... || w_k in ecb.
func macChain(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute, mac uint, param []byte, ecb uint, pad []byte) (pkcs11.ObjectHandle, error) {
	f := r.Function.(Encrypt)
	n := f.Cipher.BlockSize()
	k := blocksFor(f.Cipher, r.KeyType)

	// Buffers on the stack for the common sizes (keys of up to 64 bytes):
	// a derivation allocates nothing here.
	var msgBuf [(64/8 + 1) * 16]byte
	var wrappedBuf [64 / 8 * 16]byte
	var out [128]byte // any MAC

	// msg grows by one block per step: the chain's input so far, then pad.
	var msg, wrapped []byte
	if (k+1)*n <= len(msgBuf) {
		msg, wrapped = msgBuf[:0], wrappedBuf[:0]
	} else {
		msg, wrapped = make([]byte, 0, (k+1)*n), make([]byte, 0, k*n)
	}
	for i := 0; i < k; i++ {
		if err := contextDone(ctx); err != nil {
			return 0, err
		}
		block := r.Data[i*n : (i+1)*n]
		switch {
		case f.Mode == ECB:
			msg = append(msg[:0], block...)
		case i == 0:
			msg = append(msg[:0], block...)
			for j := range msg {
				msg[j] ^= f.IV[j]
			}
		default:
			msg = append(msg[:i*n], block...)
		}
		step := macStep(i)
		w, err := s.signInto(step, mac, param, base.Handle, append(msg, pad...), out[:])
		if err != nil {
			return 0, err
		}
		if len(w) != n {
			return 0, s.fail(step, "C_Sign", fmt.Errorf("%d bytes of MAC, want %d", len(w), n))
		}
		wrapped = append(wrapped, w...)
	}
	return s.unwrapKeyDK("unwrap DK", ecb, nil, base.Handle, wrapped, tmpl)
}

// macSteps name the MAC steps, made once rather than per derivation.
var macSteps = func() (steps [8]string) {
	for i := range steps {
		steps[i] = fmt.Sprintf("MAC of block %d", i+1)
	}
	return steps
}()

// macStep is the name of the MAC of block i+1.
func macStep(i int) string {
	if i < len(macSteps) {
		return macSteps[i]
	}
	return fmt.Sprintf("MAC of block %d", i+1)
}
