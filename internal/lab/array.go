package lab

/*
#include <stdlib.h>
#include <string.h>

typedef unsigned long lab_ulong;
typedef struct { lab_ulong type; void *pValue; lab_ulong ulValueLen; } lab_attribute;

// lab_attr_array makes, in C memory, an array of n attributes of types
// types[] whose values are the lens[i] bytes at vals + offs[i].
static lab_attribute *lab_attr_array(int n, const lab_ulong *types, const lab_ulong *lens, const lab_ulong *offs, const unsigned char *vals) {
	lab_attribute *a = calloc(n, sizeof(lab_attribute));
	for (int i = 0; i < n; i++) {
		a[i].type = types[i];
		a[i].ulValueLen = lens[i];
		a[i].pValue = malloc(lens[i] ? lens[i] : 1);
		memcpy(a[i].pValue, vals + offs[i], lens[i]);
	}
	return a;
}

static void lab_free_array(lab_attribute *a, int n) {
	for (int i = 0; i < n; i++)
		free(a[i].pValue);
	free(a);
}
*/
import "C"

import (
	"testing"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// ArrayAttribute makes the value of an array attribute (such as
// CKA_UNWRAP_TEMPLATE) for a test's C_CreateObject through
// github.com/miekg/pkcs11: the bytes of a CK_ATTRIBUTE array whose entries
// point into C memory, freed when the test ends.
func ArrayAttribute(tb testing.TB, typ uint, entries []*pkcs11.Attribute) *pkcs11.Attribute {
	n := len(entries)
	types := make([]C.lab_ulong, n+1)
	lens := make([]C.lab_ulong, n+1)
	offs := make([]C.lab_ulong, n+1)
	var vals []byte
	for i, e := range entries {
		types[i], lens[i], offs[i] = C.lab_ulong(e.Type), C.lab_ulong(len(e.Value)), C.lab_ulong(len(vals))
		vals = append(vals, e.Value...)
	}
	vals = append(vals, 0)
	arr := C.lab_attr_array(C.int(n), &types[0], &lens[0], &offs[0], (*C.uchar)(unsafe.Pointer(&vals[0])))
	tb.Cleanup(func() { C.lab_free_array(arr, C.int(n)) })
	value := C.GoBytes(unsafe.Pointer(arr), C.int(uintptr(n)*unsafe.Sizeof(C.lab_attribute{})))
	return pkcs11.NewAttribute(typ, value)
}
