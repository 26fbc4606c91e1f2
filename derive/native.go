package derive

import (
	"context"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ckm"
	"github.com/p11derive/p11derive/mechanisms"
)

// native is the Native strategy: it computes a function with the token's
// own derivation mechanisms:
// for Encrypt, one C_DeriveKey with CKM_<cipher>_<mode>_ENCRYPT_DATA
// (docs/design.md §3.1); for the key-derivation functions, their PKCS#11
// mechanism. The base key needs CKA_DERIVE.
type native struct{}

// nativeFunction is a function a token computes with C_DeriveKey alone
// (the native strategy): one call, or two with the intermediate destroyed.
// It is what native asks of the function; each function's file answers.
type nativeFunction interface {
	Function
	// nativeMechanisms are the mechanisms the token must run.
	nativeMechanisms() []uint
	// nativeCalls is the number of PKCS#11 calls native makes for data.
	nativeCalls(data []byte) int
	// nativeParams is the parameter of the first mechanism for data (the
	// others take none).
	nativeParams(data []byte) mechanisms.Params
}

// nativeIntermediate is a native function of two mechanisms: the first
// makes an intermediate key from the base key, the second DK from it.
type nativeIntermediate interface {
	nativeFunction
	// nativeIntermediate names the step that makes the intermediate and
	// the intermediate (for the step destroying it), and gives its
	// template.
	nativeIntermediate(base *Key, data []byte) (step, name string, tmpl []*pkcs11.Attribute)
}

func (native) name() Strategy { return Native }

func (native) computes(f Function) bool {
	_, ok := f.(nativeFunction)
	return ok
}

func (native) cost(r *Request) int { return r.Function.(nativeFunction).nativeCalls(r.Data) }

func (native) needs(f Function) ([]uint, []uint) {
	return f.(nativeFunction).nativeMechanisms(), []uint{pkcs11.CKA_DERIVE}
}

func (native) flags(f Function) []uint {
	fl := make([]uint, len(f.(nativeFunction).nativeMechanisms()))
	for i := range fl {
		fl[i] = pkcs11.CKF_DERIVE
	}
	return fl
}

func (n native) check(t *Token, base *Key, f Function) error {
	if e, ok := f.(Encrypt); ok && base.Derive {
		// The hot path: one mechanism, nothing missing, no slice made.
		return t.listed(mechUse{encryptDataMechanism(e), pkcs11.CKF_DERIVE})
	}
	mechs := f.(nativeFunction).nativeMechanisms()
	lerr := t.listed(uses(mechs, n.flags(f))...)
	var missing []string
	if !base.Derive {
		missing = append(missing, "CKA_DERIVE")
	}
	return needsAttrs(base, lerr, ckm.Name(mechs[0]), missing)
}

func (native) run(ctx context.Context, s *session, base *Key, r *Request, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	if e, ok := r.Function.(Encrypt); ok {
		if iv, ok := e.encryptDataIV(); ok {
			// The hot path: the parameter is built by ck on the C stack
			// (nothing allocated).
			return s.deriveKeyData("derive DK", encryptDataMechanism(e), iv, r.Data, base.Handle, tmpl)
		}
	}
	f := r.Function.(nativeFunction)
	mechs := f.nativeMechanisms()
	if len(mechs) == 1 {
		return deriveWith(s, "derive DK", mechs[0], f.nativeParams(r.Data), base.Handle, tmpl)
	}
	return deriveThrough(s, f.(nativeIntermediate), mechs, base, r.Data, tmpl)
}

// deriveWith is one C_DeriveKey from base with mech and its parameter.
func deriveWith(s *session, step string, mech uint, params mechanisms.Params, base pkcs11.ObjectHandle, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	var h pkcs11.ObjectHandle
	err := mechanisms.Call(mech, params, func(m []*pkcs11.Mechanism) error {
		var err error
		h, err = s.deriveKey(step, m, base, tmpl)
		return err
	})
	return h, err
}

// deriveThrough derives an intermediate from the base key with mechs[0]
// and the function's parameter, then DK from the intermediate with mechs[1]
// (no parameter), and destroys the intermediate.
func deriveThrough(s *session, f nativeIntermediate, mechs []uint, base *Key, data []byte, tmpl []*pkcs11.Attribute) (dk pkcs11.ObjectHandle, err error) {
	step, name, kt := f.nativeIntermediate(base, data)
	kdh, err := deriveWith(s, step, mechs[0], f.nativeParams(data), base.Handle, kt)
	if err != nil {
		return 0, err
	}
	// The intermediate holds what DK is made from (K || data): destroy it
	// on every path, panics included. A failed destruction fails the
	// derivation (and DK is destroyed): an intermediate left behind is a
	// copy of K.
	defer func() {
		derr := s.cleanup("destroy "+name, kdh)
		if derr != nil && err == nil {
			if dk != 0 {
				s.cleanup("destroy DK after failure", dk)
			}
			dk, err = 0, derr
		}
	}()
	return s.deriveKey("derive DK", []*pkcs11.Mechanism{pkcs11.NewMechanism(mechs[1], nil)}, kdh, tmpl)
}
