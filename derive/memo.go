package derive

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// memo remembers, per base key, the strategies a token refused in a way
// that cannot depend on the request (see keyRefusal), so that Auto does not
// ask again.
//
// Every derivation asks it (failed) and every Destroy tells it (forget):
// while nothing was ever refused, both answer from an atomic flag, without
// a lock that would serialise the derivations; after a refusal, readers
// share a read lock.
type memo struct {
	any     atomic.Bool   // something was ever refused
	gen     atomic.Uint64 // changes with every refusal kept or forgotten (see assessedCache)
	mu      sync.RWMutex
	byKey   map[memoKey]error
	refused map[refusal]bool
}

type refusal struct {
	base     pkcs11.ObjectHandle
	strategy Strategy
	mechs    string
}

type memoKey struct {
	base     pkcs11.ObjectHandle
	strategy Strategy
	function string
}

func (m *memo) fail(base pkcs11.ObjectHandle, s Strategy, f string, mechs []uint, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byKey == nil {
		m.byKey = map[memoKey]error{}
		m.refused = map[refusal]bool{}
	}
	m.byKey[memoKey{base, s, f}] = err
	m.refused[refusal{base, s, fmt.Sprint(mechs)}] = true
	m.any.Store(true)
	m.gen.Add(1)
}

// refusedMechanisms reports whether the token refused strategy s with this
// base key for a function that needs the same mechanisms.
func (m *memo) refusedMechanisms(base pkcs11.ObjectHandle, s Strategy, mechs []uint) bool {
	if !m.any.Load() {
		return false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.refused[refusal{base, s, fmt.Sprint(mechs)}]
}

// forget drops what the memo holds for a destroyed key's handle.
func (m *memo) forget(base pkcs11.ObjectHandle) {
	if !m.any.Load() {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.byKey {
		if k.base == base {
			delete(m.byKey, k)
			m.gen.Add(1)
		}
	}
	for k := range m.refused {
		if k.base == base {
			delete(m.refused, k)
			m.gen.Add(1)
		}
	}
}

func (m *memo) failed(base pkcs11.ObjectHandle, s Strategy, f Function) error {
	if !m.any.Load() {
		return nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.byKey) == 0 {
		return nil // the common case: nothing refused, no name to build
	}
	return m.byKey[memoKey{base, s, f.Name()}]
}
