package ck

// Loading a module: one dlopen, one C_GetFunctionList, one C_Initialize.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include "ck.h"

// ck_load dlopens path (the already loaded instance if there is one) and
// calls its C_GetFunctionList once. It never dlcloses: the function list
// must stay valid for the life of the process. It returns 0 on success, else
// the step that failed (1 dlopen, 2 dlsym, 3 C_GetFunctionList, whose CK_RV
// is in *rv, 4 a NULL list), with dlerror's message in msg for 1 and 2.
static int ck_load(const char *path, ck_function_list **fl, ck_rv *rv, char *msg, size_t msgLen) {
	void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (h == NULL)
		h = dlopen(path, RTLD_NOW);
	if (h == NULL) {
		const char *e = dlerror();
		strncpy(msg, e ? e : "", msgLen - 1);
		return 1;
	}
	ck_rv (*gfl)(ck_function_list **) = (ck_rv (*)(ck_function_list **))dlsym(h, "C_GetFunctionList");
	if (gfl == NULL) {
		const char *e = dlerror();
		strncpy(msg, e ? e : "", msgLen - 1);
		return 2;
	}
	*fl = NULL;
	*rv = gfl(fl);
	if (*rv != CK_OK)
		return 3;
	if (*fl == NULL)
		return 4;
	return 0;
}

// ck_initialize calls C_Initialize with CKF_OS_LOCKING_OK (the module may
// use the operating system's locks: p11derive calls it from many threads)
// and pReserved, which NSS softoken reads its configuration from.
static ck_rv ck_initialize(ck_function_list *f, char *reserved) {
	ck_c_initialize_args args;
	memset(&args, 0, sizeof args);
	args.flags = CK_OS_LOCKING_OK;
	args.pReserved = reserved;
	if (f->C_Initialize == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	return f->C_Initialize(&args);
}
*/
import "C"

import (
	"bytes"
	"fmt"
	"strings"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// Module is the one function list of a loaded PKCS#11 module: every call
// p11derive makes to the module goes through it. Its methods may be called
// concurrently (the token's own rules on sessions apply).
type Module struct {
	f    *C.ck_function_list
	path string
}

// Open loads the PKCS#11 module at path, takes its function list with ONE
// call to C_GetFunctionList and initialises that list with C_Initialize
// (flags CKF_OS_LOCKING_OK, pReserved initArgs if not empty: NSS softoken's
// configuration string). CKR_CRYPTOKI_ALREADY_INITIALIZED is accepted:
// another library of the process (crypto11, say) initialised the same list
// first.
//
// # One function list, one caller
//
// PKCS#11 does not promise that C_GetFunctionList returns the same list
// each time. SoftHSM2 and NSS softoken do; p11-kit's proxy
// (p11-kit-proxy.so) and its RPC client (p11-kit-client.so) hand out a new
// list on every call, each uninitialised until its own C_Initialize, with
// its own sessions and object handles. So a caller must take the list once
// and make every call through it: Open is the only place p11derive calls
// C_GetFunctionList, and callers keep the Module for the life of the
// process (derive shares one per module path).
//
// Open never calls C_Finalize and never dlcloses: other users of the module
// in the process may rely on it, and the function list must stay valid.
// The C copy of initArgs stays allocated for the same reason (modules may
// keep pReserved).
func Open(path, initArgs string) (*Module, error) {
	if path == "" || strings.IndexByte(path, 0) >= 0 {
		return nil, fmt.Errorf("ck: bad module path %q", path)
	}
	if strings.IndexByte(initArgs, 0) >= 0 {
		return nil, fmt.Errorf("ck: initialisation arguments of %s hold a NUL byte", path)
	}
	cpath := append([]byte(path), 0)
	var (
		fl  *C.ck_function_list
		rv  C.ck_rv
		msg [512]byte
	)
	step := C.ck_load((*C.char)(unsafe.Pointer(&cpath[0])), &fl, &rv, (*C.char)(unsafe.Pointer(&msg[0])), C.size_t(len(msg)))
	text := string(msg[:max(0, bytes.IndexByte(msg[:], 0))])
	switch step {
	case 0:
	case 1:
		return nil, &LoadError{Path: path, Problem: "dlopen: " + text}
	case 2:
		return nil, &LoadError{Path: path, Problem: "not a PKCS#11 module (no C_GetFunctionList): " + text}
	case 3:
		return nil, &LoadError{Path: path, Problem: "C_GetFunctionList failed", Err: pkcs11.Error(rv)}
	default:
		return nil, &LoadError{Path: path, Problem: "C_GetFunctionList returned no function list"}
	}
	var reserved *C.char
	if initArgs != "" {
		reserved = C.CString(initArgs) // kept: see above
	}
	r := uint(C.ck_initialize(fl, reserved))
	if r != pkcs11.CKR_OK && r != pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		return nil, &LoadError{Path: path, Problem: "C_Initialize failed", Err: pkcs11.Error(r)}
	}
	return &Module{f: fl, path: path}, nil
}

// A LoadError says why a module could not be loaded or initialised. Err is
// the module's pkcs11.Error, if it answered one.
type LoadError struct {
	Path    string
	Problem string
	Err     error
}

func (e *LoadError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("module %s: %s: %v", e.Path, e.Problem, e.Err)
	}
	return fmt.Sprintf("module %s: %s", e.Path, e.Problem)
}

func (e *LoadError) Unwrap() error { return e.Err }

// Path returns the path the module was loaded from.
func (m *Module) Path() string { return m.path }

// Version returns the PKCS#11 version of the module's function list.
func (m *Module) Version() (major, minor uint8) {
	return uint8(m.f.version.major), uint8(m.f.version.minor)
}

// FunctionList is the module's CK_FUNCTION_LIST, for C code of the
// project's own that calls the module directly: the C baseline the
// benchmarks measure p11derive against (package baseline).
func (m *Module) FunctionList() unsafe.Pointer { return unsafe.Pointer(m.f) }
