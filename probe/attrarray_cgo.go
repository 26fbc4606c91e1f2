//go:build cgo && unix

package probe

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// The few PKCS#11 declarations needed here, for the natural-alignment,
// CK_ULONG = unsigned long ABI of Unix (no PKCS#11 header is needed to
// build).
typedef unsigned long ck_ulong;
typedef struct { ck_ulong type; void *pValue; ck_ulong ulValueLen; } ck_attribute;
typedef ck_ulong (*get_function_list_fn)(void **);
typedef ck_ulong (*get_attribute_value_fn)(ck_ulong, ck_ulong, ck_attribute *, ck_ulong);

// CK_FUNCTION_LIST: a CK_VERSION, then the function pointers in the order
// of pkcs11f.h. C_GetAttributeValue is the 25th.
typedef struct {
	unsigned char major, minor;
	void *fn[24];
	get_attribute_value_fn C_GetAttributeValue;
} ck_function_list_head;

#define MAX_ENTRIES 64
#define MAX_VALUE 1024

// probe_read_array reads the array attribute typ of object obj in session
// sess of the module at path (already loaded in the process), in the
// three steps of PKCS#11 §5.7 (C_GetAttributeValue): the array's length,
// then each entry's type and length, then the values. Results: *n entries
// in types[], lens[] and vals (MAX_VALUE bytes per entry). *state: 0 the
// attribute is absent, 1 present, -1 the token gave it in a form that
// cannot be read safely. Returns the CK_RV of the failing call, 0 on
// success, or (ck_ulong)-1 if the module is not loaded.
static ck_ulong probe_read_array(const char *path, ck_ulong sess, ck_ulong obj, ck_ulong typ,
		ck_ulong *types, ck_ulong *lens, unsigned char *vals, int *n, int *state) {
	*n = 0;
	*state = 0;
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
	if (h == NULL)
		return (ck_ulong)-1;
	get_function_list_fn gfl = (get_function_list_fn)dlsym(h, "C_GetFunctionList");
	ck_function_list_head *fl = NULL;
	ck_ulong rv;
	if (gfl == NULL || (rv = gfl((void **)&fl)) != 0 || fl == NULL) {
		dlclose(h);
		return (ck_ulong)-1;
	}
	ck_attribute top = { typ, NULL, 0 };
	rv = fl->C_GetAttributeValue(sess, obj, &top, 1);
	// 0x12: CKR_ATTRIBUTE_TYPE_INVALID
	if (rv == 0x12 || (rv == 0 && top.ulValueLen == (ck_ulong)-1)) {
		dlclose(h);
		return 0;
	}
	if (rv != 0) {
		dlclose(h);
		return rv;
	}
	*state = 1;
	ck_ulong count = top.ulValueLen / sizeof(ck_attribute);
	if (top.ulValueLen % sizeof(ck_attribute) != 0 || count > MAX_ENTRIES) {
		*state = -1;
		dlclose(h);
		return 0;
	}
	if (count == 0) {
		dlclose(h);
		return 0;
	}
	ck_attribute arr[MAX_ENTRIES];
	memset(arr, 0, sizeof arr);
	top.pValue = arr;
	top.ulValueLen = count * sizeof(ck_attribute);
	rv = fl->C_GetAttributeValue(sess, obj, &top, 1);
	if (rv != 0) {
		dlclose(h);
		return rv;
	}
	for (ck_ulong i = 0; i < count; i++) {
		if (arr[i].ulValueLen > MAX_VALUE) {
			*state = -1;
			dlclose(h);
			return 0;
		}
		arr[i].pValue = vals + i * MAX_VALUE;
	}
	top.pValue = arr;
	top.ulValueLen = count * sizeof(ck_attribute);
	rv = fl->C_GetAttributeValue(sess, obj, &top, 1);
	if (rv != 0) {
		dlclose(h);
		return rv;
	}
	for (ck_ulong i = 0; i < count; i++) {
		// A token that hands back the array it was given at creation
		// (pointers into someone else's memory) instead of filling ours
		// cannot be read safely.
		if (arr[i].pValue != (void *)(vals + i * MAX_VALUE) || arr[i].ulValueLen > MAX_VALUE) {
			*state = -1;
			dlclose(h);
			return 0;
		}
		types[i] = arr[i].type;
		lens[i] = arr[i].ulValueLen;
	}
	*n = (int)count;
	dlclose(h);
	return 0;
}

// probe_attr_array makes, in C memory, an array of n attributes of types
// types[] whose values are the lens[i] bytes at vals + offs[i]: the value
// of an array attribute as C_CreateObject takes it. Free it with
// probe_free_array.
static ck_attribute *probe_attr_array(int n, const ck_ulong *types, const ck_ulong *lens, const ck_ulong *offs, const unsigned char *vals) {
	ck_attribute *a = calloc(n, sizeof(ck_attribute));
	for (int i = 0; i < n; i++) {
		a[i].type = types[i];
		a[i].ulValueLen = lens[i];
		a[i].pValue = malloc(lens[i] ? lens[i] : 1);
		memcpy(a[i].pValue, vals + offs[i], lens[i]);
	}
	return a;
}

static void probe_free_array(ck_attribute *a, int n) {
	for (int i = 0; i < n; i++)
		free(a[i].pValue);
	free(a);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/miekg/pkcs11"
)

const (
	maxEntries = C.MAX_ENTRIES
	maxValue   = C.MAX_VALUE
)

// readArrayAttribute reads an array attribute (such as
// CKA_UNWRAP_TEMPLATE) of an object, calling C_GetAttributeValue directly
// through the module's function list: github.com/miekg/pkcs11 reads an
// attribute in two calls with one flat buffer, which cannot hold the
// entries' values. present is false when the object has no such
// attribute.
func readArrayAttribute(module string, s pkcs11.SessionHandle, h pkcs11.ObjectHandle, typ uint) (entries []rawAttr, present bool, err error) {
	cpath := C.CString(module)
	defer C.free(unsafe.Pointer(cpath))
	types := (*[maxEntries]C.ck_ulong)(C.calloc(maxEntries, C.size_t(unsafe.Sizeof(C.ck_ulong(0)))))
	lens := (*[maxEntries]C.ck_ulong)(C.calloc(maxEntries, C.size_t(unsafe.Sizeof(C.ck_ulong(0)))))
	vals := (*[maxEntries * maxValue]byte)(C.calloc(maxEntries*maxValue, 1))
	defer C.free(unsafe.Pointer(types))
	defer C.free(unsafe.Pointer(lens))
	defer C.free(unsafe.Pointer(vals))
	var n, state C.int
	rv := C.probe_read_array(cpath, C.ck_ulong(s), C.ck_ulong(h), C.ck_ulong(typ),
		&types[0], &lens[0], (*C.uchar)(unsafe.Pointer(&vals[0])), &n, &state)
	switch {
	case rv == ^C.ck_ulong(0):
		return nil, false, fmt.Errorf("module %s is not loaded in this process, or has no C_GetFunctionList", module)
	case rv != 0:
		return nil, false, fmt.Errorf("C_GetAttributeValue: %w", pkcs11.Error(rv))
	case state == 0:
		return nil, false, nil
	case state < 0:
		return nil, true, fmt.Errorf("the token does not fill in the entries of the array (it may hand back the array it was given, pointers included), so it cannot be read safely")
	}
	for i := 0; i < int(n); i++ {
		v := make([]byte, int(lens[i]))
		copy(v, vals[i*maxValue:])
		entries = append(entries, rawAttr{typ: uint(types[i]), value: v})
	}
	return entries, true, nil
}

// arrayAttribute makes the value of an array attribute (such as
// CKA_UNWRAP_TEMPLATE) for C_CreateObject through github.com/miekg/pkcs11:
// the bytes of a CK_ATTRIBUTE array whose entries point into C memory,
// valid until free is called. It is for tests, which make keys with an
// unwrap template.
func arrayAttribute(typ uint, entries []*pkcs11.Attribute) (attr *pkcs11.Attribute, free func()) {
	n := len(entries)
	types := make([]C.ck_ulong, n+1)
	lens := make([]C.ck_ulong, n+1)
	offs := make([]C.ck_ulong, n+1)
	var vals []byte
	for i, e := range entries {
		types[i], lens[i], offs[i] = C.ck_ulong(e.Type), C.ck_ulong(len(e.Value)), C.ck_ulong(len(vals))
		vals = append(vals, e.Value...)
	}
	vals = append(vals, 0)
	arr := C.probe_attr_array(C.int(n), &types[0], &lens[0], &offs[0], (*C.uchar)(unsafe.Pointer(&vals[0])))
	value := C.GoBytes(unsafe.Pointer(arr), C.int(uintptr(n)*unsafe.Sizeof(C.ck_attribute{})))
	return pkcs11.NewAttribute(typ, value), func() { C.probe_free_array(arr, C.int(n)) }
}
