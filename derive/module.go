package derive

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ck"
)

// A module is one loaded PKCS#11 library, shared by every Token of this
// process that names the same path.
//
// p11derive never calls C_Finalize and never unloads a module: another
// library of the process (crypto11, or a Token opened later) may be using
// it, and PKCS#11 state is per process. A module stays initialised from the
// first Open until the process exits.
type module struct {
	path string
	ctx  *pkcs11.Ctx
	// fast makes the hot calls (derive, unwrap, destroy, attributes,
	// encrypt, sign) in one cgo crossing each, and C_GetAttributeValue in
	// one PKCS#11 call instead of miekg's two; nil if the module's function
	// list could not be had, and then miekg makes every call.
	fast *ck.Module
	refs int
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

func loadModule(path, initArgs string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m := modules[path]; m != nil {
		m.refs++
		return m, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("p11derive: cannot load PKCS#11 module %q: %w", path, ErrNotFound)
	}
	var opts []pkcs11.InitializeOption
	if initArgs != "" {
		// The module reads pReserved during C_Initialize only; a NUL-terminated
		// Go byte slice holds no Go pointers, so cgo may pass it.
		args := append([]byte(initArgs), 0)
		defer runtime.KeepAlive(args)
		opts = append(opts, pkcs11.InitializeWithReserved(unsafe.Pointer(&args[0])))
	}
	// CKR_CRYPTOKI_ALREADY_INITIALIZED means another library of this process
	// (crypto11, say) initialised the module first: that is fine.
	if err := ctx.Initialize(opts...); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		ctx.Destroy()
		return nil, &TokenError{Step: "initialise module " + path, Call: "C_Initialize", Err: err}
	}
	m := &module{path: path, ctx: ctx, refs: 1}
	if fast, err := ck.Load(path); err == nil {
		m.fast = fast
	}
	modules[path] = m
	return m, nil
}

func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
}
