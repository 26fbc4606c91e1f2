package derive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/p11derive/p11derive/internal/ck"
)

// A module is one loaded PKCS#11 library, shared by every Token of this
// process that names the same path. It holds the module's one function
// list (see ck.Open): every PKCS#11 call p11derive makes goes through it.
//
// p11derive never calls C_Finalize and never unloads a module: another
// library of the process (crypto11, or a Token opened later) may be using
// it, and PKCS#11 state is per process. A module stays initialised from the
// first Open until the process exits.
type module struct {
	path string
	ck   *ck.Module
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
	// CKR_CRYPTOKI_ALREADY_INITIALIZED means another library of this process
	// (crypto11, say) initialised the module first: ck.Open accepts it.
	c, err := ck.Open(path, initArgs)
	if err != nil {
		return nil, moduleErr(path, err)
	}
	m := &module{path: path, ck: c, refs: 1}
	modules[path] = m
	return m, nil
}

// moduleErr says why the module at path could not be had: a file that is
// not there (ErrNotFound), one that is not a PKCS#11 module, or the
// module's own refusal (a *TokenError with its CKR).
func moduleErr(path string, err error) error {
	var le *ck.LoadError
	if !errors.As(err, &le) {
		return fmt.Errorf("p11derive: cannot load PKCS#11 module %q: %w", path, err)
	}
	if le.Err != nil {
		call := "C_Initialize"
		if strings.Contains(le.Problem, "C_GetFunctionList") {
			call = "C_GetFunctionList"
		}
		return &TokenError{Step: "initialise module " + path, Call: call, Err: le.Err}
	}
	if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
		return fmt.Errorf("p11derive: cannot load PKCS#11 module %q: no such file: %w", path, ErrNotFound)
	}
	if strings.HasPrefix(le.Problem, "dlopen: ") {
		return fmt.Errorf("p11derive: cannot load PKCS#11 module %q: not a shared library this process can load (%s)", path, le.Problem)
	}
	return fmt.Errorf("p11derive: cannot load PKCS#11 module %q: %s", path, le.Problem)
}

func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	m.refs--
}
