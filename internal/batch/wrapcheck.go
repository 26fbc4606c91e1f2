package batch

import (
	"fmt"
	"strings"
)

// Check validates w before any key is made: the transport key's cipher
// and CKA_WRAP, and the IV (defaulted to 8 zero bytes for des3-cbc). It
// is for callers other than Deriver (the scheme command's --wrap-key, a
// scheme batch); keyLen, when not 0, is the length of the keys to wrap.
func (w *Wrap) Check(keyLen int) error {
	if w.Key == nil {
		return fmt.Errorf("p11derive: no wrapping key")
	}
	m := w.Mech
	if w.Key.Cipher() != m.transport {
		return fmt.Errorf("p11derive: --wrap-mech %s needs a wrapping key of type %s; %q is not one", m.Name, strings.ToUpper(m.transport.String()), w.Key.Label)
	}
	if !w.Key.Wrap {
		return fmt.Errorf("p11derive: wrapping key %q lacks CKA_WRAP", w.Key.Label)
	}
	if keyLen > 0 && (keyLen < m.min || (m.multiple > 0 && keyLen%m.multiple != 0)) {
		return fmt.Errorf("p11derive: --wrap-mech %s cannot wrap a %d-byte key", m.Name, keyLen)
	}
	if m.iv {
		if w.IV == nil {
			w.IV = make([]byte, 8)
		}
		if len(w.IV) != 8 {
			return fmt.Errorf("p11derive: --wrap-iv: %s needs an 8-byte IV, got %d bytes", m.Name, len(w.IV))
		}
	} else if w.IV != nil {
		return fmt.Errorf("p11derive: --wrap-iv: %s takes no IV", m.Name)
	}
	return nil
}
