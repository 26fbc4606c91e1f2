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
// With CMAC, CMAC_K(x || y) for a full last block y is
// E_K(CBC-MAC_K(x) XOR y XOR K1), K1 = dbl(L), L = E_K(0^n): appending
// y = K1 gives E_K(CBC-MAC_K(x)) again.
type macUnwrap struct{ cmac bool }

func (m macUnwrap) name() Strategy {
	if m.cmac {
		return CMACUnwrap
	}
	return MACUnwrap
}

func (m macUnwrap) computes(f Function) bool {
	e, ok := f.(Encrypt)
	if !ok {
		return false
	}
	return !m.cmac || e.Cipher != DES // PKCS#11 has no single-DES CMAC
}

func (m macUnwrap) cost(r *Request) int {
	k := blocksFor(r.Function.(Encrypt).Cipher, r.KeyType)
	calls := 2*k + 1 // C_SignInit + C_Sign per block, C_UnwrapKey
	if m.cmac {
		calls += 2 // C_EncryptInit + C_Encrypt for L
	}
	return calls
}

// macMechanisms are the MAC, ECB and (for CMAC) L mechanisms for c.
func (m macUnwrap) mechanisms(c Cipher) (mac, ecb uint) {
	switch c {
	case AES:
		mac, ecb = pkcs11.CKM_AES_MAC_GENERAL, pkcs11.CKM_AES_ECB
		if m.cmac {
			mac = pkcs11.CKM_AES_CMAC
		}
	case DES3:
		mac, ecb = pkcs11.CKM_DES3_MAC_GENERAL, pkcs11.CKM_DES3_ECB
		if m.cmac {
			mac = pkcs11.CKM_DES3_CMAC
		}
	case DES:
		mac, ecb = pkcs11.CKM_DES_MAC_GENERAL, pkcs11.CKM_DES_ECB
	}
	return mac, ecb
}

func (m macUnwrap) needs(f Function) ([]uint, []uint) {
	mac, ecb := m.mechanisms(f.(Encrypt).Cipher)
	attrs := []uint{pkcs11.CKA_SIGN, pkcs11.CKA_UNWRAP}
	if m.cmac {
		attrs = append(attrs, pkcs11.CKA_ENCRYPT)
	}
	return []uint{mac, ecb}, attrs
}

// flags: the MAC signs; ECB unwraps (and, for CMAC, encrypts L).
func (m macUnwrap) flags(Function) []uint {
	if m.cmac {
		return []uint{pkcs11.CKF_SIGN, pkcs11.CKF_UNWRAP | pkcs11.CKF_ENCRYPT}
	}
	return []uint{pkcs11.CKF_SIGN, pkcs11.CKF_UNWRAP}
}

func (m macUnwrap) check(t *Token, base *Key, f Function) error {
	mac, ecb := m.mechanisms(f.(Encrypt).Cipher)
	fl := m.flags(f)
	lerr := t.listed(mechUse{mac, fl[0]}, mechUse{ecb, fl[1]})
	var missing []string
	if !base.Sign {
		missing = append(missing, "CKA_SIGN")
	}
	if !base.Unwrap {
		missing = append(missing, "CKA_UNWRAP")
	}
	if m.cmac && !base.Encrypt {
		missing = append(missing, "CKA_ENCRYPT")
	}
	if len(missing) == 0 {
		return lerr // the hot path: no name built
	}
	return needsAttrs(base, lerr, ckm.Name(mac)+" then "+ckm.Name(ecb)+" unwrap", missing)
}

func (m macUnwrap) run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	f := r.Function.(Encrypt)
	n := f.Cipher.BlockSize()
	k := blocksFor(f.Cipher, r.KeyType)
	mac, ecb := m.mechanisms(f.Cipher)

	// Buffers on the stack for the common sizes (keys of up to 64 bytes):
	// a derivation allocates nothing here.
	var padBuf [16]byte
	var msgBuf [(64/8 + 1) * 16]byte
	var wrappedBuf [64 / 8 * 16]byte
	var out [128]byte // any MAC, and L

	// pad is the block appended to every MAC input: zero for CBC-MAC, K1
	// for CMAC.
	pad := padBuf[:n]
	if m.cmac {
		if err := s.cmacSubkey(pad, ecb, base.Handle, out[:]); err != nil {
			return 0, err
		}
		defer clear(padBuf[:])
	}
	// The MAC's parameter: CK_MAC_GENERAL_PARAMS = n for *_MAC_GENERAL
	// (a CK_ULONG), none for CMAC.
	var paramBuf [8]byte
	var param []byte
	if !m.cmac {
		binary.NativeEndian.PutUint64(paramBuf[:], uint64(n))
		param = paramBuf[:]
	}

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
