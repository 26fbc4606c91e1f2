// Package ck makes the hot PKCS#11 calls of p11derive (C_DeriveKey,
// C_UnwrapKey, C_DestroyObject, C_GetAttributeValue, C_EncryptInit and
// C_Encrypt, C_SignInit and C_Sign) directly through a module's
// CK_FUNCTION_LIST: one cgo crossing per PKCS#11 call, no C memory
// allocation, and at most two Go allocations per call.
//
// It complements github.com/miekg/pkcs11, it does not replace it: the module
// is loaded and initialised, and sessions are opened and logged in, through
// miekg (pkcs11.New, Initialize, OpenSession, Login); Load then finds the
// same module instance in the process and returns its function list.
// Handles, mechanisms and return values are plain PKCS#11 numbers: rv is
// the CK_RV of the call (pkcs11.CKR_OK on success; pkcs11.Error(rv) makes
// it a miekg error).
//
// # Where miekg's cost goes, and what ck does instead
//
// miekg copies every attribute value of a template into its own C.malloc'd
// block (a cgo crossing each way per attribute), makes every
// C_GetAttributeValue, C_Encrypt and C_Sign two PKCS#11 calls (a length
// query, then the call), and allocates Go and C memory for each result. ck
// instead
//
//   - serialises a template into one Go buffer of CK_ULONG words: a header of
//     (type, byte offset, length) triples followed by the values, each
//     aligned to a CK_ULONG, and lets a small C function build the
//     CK_ATTRIBUTE array (at most MaxAttributes entries) and the CK_MECHANISM
//     on the C stack, pointing into that buffer and into the mechanism
//     parameter, for the duration of the call only. The buffer holds no Go
//     pointers, so cgo lets it be passed to C; the C stack holds the pointers
//     into Go memory, which cgo keeps in place (pinned) until the call
//     returns. No runtime.Pinner is needed: nothing outlives the call, and
//     no Go memory holding a pointer to Go memory is ever handed to C.
//   - declares its C functions "#cgo noescape" and "#cgo nocallback" (they
//     keep no pointer after returning, and the PKCS#11 module never calls
//     back into Go), so the compiler may keep the template buffer (1 KiB)
//     and the output CK_ULONGs on the goroutine stack: DeriveKey, UnwrapKey,
//     DestroyObject, EncryptInit, Encrypt, SignInit and Sign allocate
//     nothing (a template too large for the stack buffer, one allocation);
//     GetAttributeValue allocates its result (the [][]byte and one buffer
//     holding all values). The goroutine stack cannot move during the call:
//     a goroutine's stack is only copied by the goroutine itself, or shrunk
//     by the garbage collector when it is not in a system or cgo call.
//   - reads attributes whose maximum sizes the caller knows, and encrypts or
//     signs into a buffer whose size the caller knows, in one PKCS#11 call.
//
// A mechanism parameter (param) is passed to the token as is: the bytes of
// the C parameter structure, such as mechanisms.Call gives in
// pkcs11.Mechanism.Parameter. It must hold no Go pointers (pointers into C
// memory are fine), and whatever it points to must stay valid during the
// call.
//
// # Platforms
//
// Unix only, with cgo: ck.h declares the natural-alignment layout with
// CK_ULONG = C unsigned long. On Windows PKCS#11 structures are packed to
// 1 byte and CK_ULONG is 32 bits, so the package refuses to build there. The
// declarations are checked against <pkcs11.h> from NSS by the tests (through
// internal/cabi); building ck itself needs no PKCS#11 headers.
package ck

/*
#include "ck.h"

#define CK_MAX_ATTRS 64

static ck_rv ck_derive_key(ck_function_list *f, ck_ulong session, ck_ulong mech, void *param, ck_ulong paramLen,
		ck_ulong base, const ck_ulong *w, ck_ulong n, ck_ulong *key) {
	ck_attribute a[CK_MAX_ATTRS];
	ck_mechanism m = { mech, param, paramLen };
	if (f == NULL || n > CK_MAX_ATTRS)
		return CK_ARGUMENTS_BAD;
	if (f->C_DeriveKey == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	ck_template(a, w, n);
	return f->C_DeriveKey(session, &m, base, n ? a : NULL, n, key);
}

// ck_derive_key_data is ck_derive_key for the *_ENCRYPT_DATA mechanisms: it
// builds their parameter on the C stack, pointing at data. kind 0:
// CK_KEY_DERIVATION_STRING_DATA {pData, ulLen}; kind 16 or 8:
// CK_AES_CBC_ENCRYPT_DATA_PARAMS or CK_DES_CBC_ENCRYPT_DATA_PARAMS
// {iv[kind], pData, length}.
static ck_rv ck_derive_key_data(ck_function_list *f, ck_ulong session, ck_ulong mech, int kind, const unsigned char *iv,
		unsigned char *data, ck_ulong dataLen, ck_ulong base, const ck_ulong *w, ck_ulong n, ck_ulong *key) {
	struct { unsigned char *pData; ck_ulong ulLen; } sd = { data, dataLen };
	struct { unsigned char iv[16]; unsigned char *pData; ck_ulong length; } aes;
	struct { unsigned char iv[8]; unsigned char *pData; ck_ulong length; } des;
	ck_mechanism m = { mech, &sd, sizeof sd };
	switch (kind) {
	case 0:
		break;
	case 16:
		for (int i = 0; i < 16; i++) aes.iv[i] = iv[i];
		aes.pData = data;
		aes.length = dataLen;
		m.pParameter = &aes;
		m.ulParameterLen = sizeof aes;
		break;
	case 8:
		for (int i = 0; i < 8; i++) des.iv[i] = iv[i];
		des.pData = data;
		des.length = dataLen;
		m.pParameter = &des;
		m.ulParameterLen = sizeof des;
		break;
	default:
		return CK_ARGUMENTS_BAD;
	}
	return ck_derive_key(f, session, mech, m.pParameter, m.ulParameterLen, base, w, n, key);
}

static ck_rv ck_unwrap_key(ck_function_list *f, ck_ulong session, ck_ulong mech, void *param, ck_ulong paramLen,
		ck_ulong unwrappingKey, unsigned char *wrapped, ck_ulong wrappedLen, const ck_ulong *w, ck_ulong n, ck_ulong *key) {
	ck_attribute a[CK_MAX_ATTRS];
	ck_mechanism m = { mech, param, paramLen };
	if (f == NULL || n > CK_MAX_ATTRS)
		return CK_ARGUMENTS_BAD;
	if (f->C_UnwrapKey == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	ck_template(a, w, n);
	return f->C_UnwrapKey(session, &m, unwrappingKey, wrapped, wrappedLen, n ? a : NULL, n, key);
}

static ck_rv ck_destroy_object(ck_function_list *f, ck_ulong session, ck_ulong object) {
	if (f == NULL)
		return CK_ARGUMENTS_BAD;
	if (f->C_DestroyObject == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	return f->C_DestroyObject(session, object);
}

// ck_get_attribute_value reads n attributes into w: (type, byte offset from
// w, maximum length) triples, then room for the values. Every pValue is
// non-NULL (a NULL pValue would make the call a length query) and the
// lengths the token answers replace the maximum lengths in w.
static ck_rv ck_get_attribute_value(ck_function_list *f, ck_ulong session, ck_ulong object, ck_ulong *w, ck_ulong n) {
	ck_attribute a[CK_MAX_ATTRS];
	unsigned char *base = (unsigned char *)w;
	if (f == NULL || n > CK_MAX_ATTRS)
		return CK_ARGUMENTS_BAD;
	if (f->C_GetAttributeValue == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	for (ck_ulong i = 0; i < n; i++) {
		a[i].type = w[3 * i];
		a[i].pValue = base + w[3 * i + 1];
		a[i].ulValueLen = w[3 * i + 2];
	}
	ck_rv rv = f->C_GetAttributeValue(session, object, n ? a : NULL, n);
	for (ck_ulong i = 0; i < n; i++)
		w[3 * i + 2] = a[i].ulValueLen;
	return rv;
}

static ck_rv ck_encrypt_init(ck_function_list *f, ck_ulong session, ck_ulong mech, void *param, ck_ulong paramLen, ck_ulong key) {
	ck_mechanism m = { mech, param, paramLen };
	if (f == NULL)
		return CK_ARGUMENTS_BAD;
	if (f->C_EncryptInit == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	return f->C_EncryptInit(session, &m, key);
}

static ck_rv ck_encrypt(ck_function_list *f, ck_ulong session, unsigned char *in, ck_ulong inLen, unsigned char *out, ck_ulong *outLen) {
	if (f == NULL)
		return CK_ARGUMENTS_BAD;
	if (f->C_Encrypt == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	return f->C_Encrypt(session, in, inLen, out, outLen);
}

static ck_rv ck_sign_init(ck_function_list *f, ck_ulong session, ck_ulong mech, void *param, ck_ulong paramLen, ck_ulong key) {
	ck_mechanism m = { mech, param, paramLen };
	if (f == NULL)
		return CK_ARGUMENTS_BAD;
	if (f->C_SignInit == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	return f->C_SignInit(session, &m, key);
}

static ck_rv ck_sign(ck_function_list *f, ck_ulong session, unsigned char *in, ck_ulong inLen, unsigned char *out, ck_ulong *outLen) {
	if (f == NULL)
		return CK_ARGUMENTS_BAD;
	if (f->C_Sign == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	return f->C_Sign(session, in, inLen, out, outLen);
}

// ck_once is an Init and its one-shot call — ck_encrypt_init then
// ck_encrypt (op 0), or ck_sign_init then ck_sign (op 1) — the second only
// if the first succeeded: two PKCS#11 calls in one crossing. *made is the
// number of calls made (1 or 2), the return value the last one's.
static ck_rv ck_once(ck_function_list *f, int op, ck_ulong session, ck_ulong mech, void *param, ck_ulong paramLen, ck_ulong key,
		unsigned char *in, ck_ulong inLen, unsigned char *out, ck_ulong *outLen, int *made) {
	ck_rv rv;
	*made = 1;
	rv = op ? ck_sign_init(f, session, mech, param, paramLen, key) : ck_encrypt_init(f, session, mech, param, paramLen, key);
	if (rv != CK_OK)
		return rv;
	*made = 2;
	return op ? ck_sign(f, session, in, inLen, out, outLen) : ck_encrypt(f, session, in, inLen, out, outLen);
}

// ck_derive_key_data_read is ck_derive_key_data, then, if it made a key,
// ck_get_attribute_value of r (rn attributes) on it: two PKCS#11 calls
// in one crossing. *readRv is the second call's return value.
static ck_rv ck_derive_key_data_read(ck_function_list *f, ck_ulong session, ck_ulong mech, int kind, const unsigned char *iv,
		unsigned char *data, ck_ulong dataLen, ck_ulong base, const ck_ulong *w, ck_ulong n, ck_ulong *key,
		ck_ulong *r, ck_ulong rn, ck_rv *readRv) {
	ck_rv rv = ck_derive_key_data(f, session, mech, kind, iv, data, dataLen, base, w, n, key);
	if (rv == CK_OK)
		*readRv = ck_get_attribute_value(f, session, *key, r, rn);
	return rv;
}

// ck_unwrap_key_read is ck_unwrap_key, then, if it made a key,
// ck_get_attribute_value of r on it: two PKCS#11 calls in one crossing.
static ck_rv ck_unwrap_key_read(ck_function_list *f, ck_ulong session, ck_ulong mech, void *param, ck_ulong paramLen,
		ck_ulong unwrappingKey, unsigned char *wrapped, ck_ulong wrappedLen, const ck_ulong *w, ck_ulong n, ck_ulong *key,
		ck_ulong *r, ck_ulong rn, ck_rv *readRv) {
	ck_rv rv = ck_unwrap_key(f, session, mech, param, paramLen, unwrappingKey, wrapped, wrappedLen, w, n, key);
	if (rv == CK_OK)
		*readRv = ck_get_attribute_value(f, session, *key, r, rn);
	return rv;
}

// ck_kcv_wrap_destroy is a check value, a wrap and a destruction of key,
// in one crossing: C_EncryptInit(kmech, key) and C_Encrypt(in, kout), then
// C_WrapKey(wmech, wrapping, key, wout), then C_DestroyObject(key). It
// stops at the first call that fails; *made is the number of calls made
// (1 to 4), and the return value is the last one's.
static ck_rv ck_kcv_wrap_destroy(ck_function_list *f, ck_ulong s, ck_ulong kmech, unsigned char *in, ck_ulong inLen,
		unsigned char *kout, ck_ulong *koutLen, ck_ulong wmech, void *wparam, ck_ulong wparamLen, ck_ulong wrapping,
		ck_ulong key, unsigned char *wout, ck_ulong *woutLen, int *made) {
	ck_rv rv;
	*made = 1;
	if ((rv = ck_encrypt_init(f, s, kmech, NULL, 0, key)) != CK_OK)
		return rv;
	*made = 2;
	if ((rv = ck_encrypt(f, s, in, inLen, kout, koutLen)) != CK_OK)
		return rv;
	*made = 3;
	ck_mechanism m = { wmech, wparam, wparamLen };
	if (f->C_WrapKey == NULL)
		return CK_FUNCTION_NOT_SUPPORTED;
	if ((rv = f->C_WrapKey(s, &m, wrapping, key, wout, woutLen)) != CK_OK)
		return rv;
	*made = 4;
	return ck_destroy_object(f, s, key);
}

#cgo noescape ck_once
#cgo nocallback ck_once
#cgo noescape ck_kcv_wrap_destroy
#cgo nocallback ck_kcv_wrap_destroy
#cgo noescape ck_derive_key
#cgo nocallback ck_derive_key
#cgo noescape ck_derive_key_data
#cgo nocallback ck_derive_key_data
#cgo noescape ck_derive_key_data_read
#cgo nocallback ck_derive_key_data_read
#cgo noescape ck_unwrap_key_read
#cgo nocallback ck_unwrap_key_read
#cgo noescape ck_unwrap_key
#cgo nocallback ck_unwrap_key
#cgo noescape ck_destroy_object
#cgo nocallback ck_destroy_object
#cgo noescape ck_get_attribute_value
#cgo nocallback ck_get_attribute_value
#cgo noescape ck_encrypt_init
#cgo nocallback ck_encrypt_init
#cgo noescape ck_encrypt
#cgo nocallback ck_encrypt
#cgo noescape ck_sign_init
#cgo nocallback ck_sign_init
#cgo noescape ck_sign
#cgo nocallback ck_sign
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// MaxAttributes is the largest template (DeriveKey, UnwrapKey) or number of
// attributes (GetAttributeValue) ck passes in one call; more make the call
// answer CKR_ARGUMENTS_BAD without reaching the token.
const MaxAttributes = C.CK_MAX_ATTRS

// stackWords is the size, in CK_ULONGs, of the template buffer DeriveKey and
// UnwrapKey keep on the goroutine stack; larger templates get a heap buffer
// (one allocation). 128 words (1 KiB on LP64) hold a 13-attribute template
// of CK_ULONG and CK_BBOOL values with a label of up to 616 bytes.
const stackWords = 128

// testSlack is room, in CK_ULONGs, that GetAttributeValue allocates past
// the end of its buffer without counting it as part of the buffer, so that
// a test can make a token write past the end without corrupting memory.
// Zero outside tests.
var testSlack = 0

const (
	ulongSize   = int(unsafe.Sizeof(C.ck_ulong(0)))
	unavailable = ^C.ck_ulong(0) // CK_UNAVAILABLE_INFORMATION
)

// Return values ck produces itself, without calling the token.
const (
	rvArgumentsBad = pkcs11.CKR_ARGUMENTS_BAD
)

// bytePtr returns a pointer to b's first byte, or nil if b is empty.
func bytePtr(b []byte) *C.uchar {
	if len(b) == 0 {
		return nil
	}
	return (*C.uchar)(unsafe.Pointer(unsafe.SliceData(b)))
}

// voidPtr returns a pointer to b's first byte, or nil if b is empty.
func voidPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(b))
}

// wordsFor returns the number of CK_ULONGs needed to hold n bytes.
func wordsFor(n int) int { return (n + ulongSize - 1) / ulongSize }

// templateWords returns the size, in CK_ULONGs, of template serialised, or
// -1 if the template cannot be passed (too long, or a nil entry).
func templateWords(template []*pkcs11.Attribute) int {
	if len(template) > MaxAttributes {
		return -1
	}
	n := 3 * len(template)
	for _, a := range template {
		if a == nil {
			return -1
		}
		n += wordsFor(len(a.Value))
	}
	return n
}

// encodeOn serialises template (n = templateWords(template) words) into
// stack, the caller's buffer on its goroutine stack, or into a heap buffer
// when it does not fit, and returns the words used. Inlined, it lets the
// hot calls keep their template on the stack.
func encodeOn(stack *[stackWords]C.ck_ulong, n int, template []*pkcs11.Attribute) []C.ck_ulong {
	w := stack[:]
	if n > len(w) {
		w = make([]C.ck_ulong, n)
	}
	w = w[:n]
	encodeTemplate(w, template)
	return w
}

// encodeTemplate serialises template into w (templateWords(template) long):
// (type, byte offset, length) triples, then the values, each starting on a
// CK_ULONG boundary (tokens read CK_ULONG and CK_BBOOL values in place).
func encodeTemplate(w []C.ck_ulong, template []*pkcs11.Attribute) {
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*ulongSize)
	off := 3 * len(template) * ulongSize
	for i, a := range template {
		w[3*i] = C.ck_ulong(a.Type)
		w[3*i+1] = C.ck_ulong(off)
		w[3*i+2] = C.ck_ulong(len(a.Value))
		copy(b[off:], a.Value)
		off += wordsFor(len(a.Value)) * ulongSize
	}
}

// DeriveKey calls C_DeriveKey(session, {mechanism, param}, base, template)
// and returns the new key's handle (0 unless rv is CKR_OK). Template values
// are the bytes github.com/miekg/pkcs11's NewAttribute makes.
func (m *Module) DeriveKey(session, mechanism uint, param []byte, base uint, template []*pkcs11.Attribute) (handle uint, rv uint) {
	n := templateWords(template)
	if n < 0 {
		return 0, rvArgumentsBad
	}
	var stack [stackWords]C.ck_ulong
	w := encodeOn(&stack, n, template)
	var h C.ck_ulong
	r := C.ck_derive_key(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)),
		C.ck_ulong(base), unsafe.SliceData(w), C.ck_ulong(len(template)), &h)
	if r != C.CK_OK {
		return 0, uint(r)
	}
	return uint(h), uint(r)
}

// DeriveKeyData calls C_DeriveKey(session, {mechanism, param}, base,
// template) for a *_ENCRYPT_DATA mechanism, with the mechanism's parameter
// built on the C stack around data: with an empty iv a
// CK_KEY_DERIVATION_STRING_DATA (the ECB mechanisms), with a 16- or 8-byte
// iv a CK_AES_CBC_ENCRYPT_DATA_PARAMS or CK_DES_CBC_ENCRYPT_DATA_PARAMS
// (the CBC ones). It is DeriveKey without the C copy of data that a
// parameter holding a pointer needs: nothing allocated.
func (m *Module) DeriveKeyData(session, mechanism uint, iv, data []byte, base uint, template []*pkcs11.Attribute) (handle uint, rv uint) {
	kind := len(iv)
	if kind != 0 && kind != 8 && kind != 16 {
		return 0, rvArgumentsBad
	}
	n := templateWords(template)
	if n < 0 {
		return 0, rvArgumentsBad
	}
	var stack [stackWords]C.ck_ulong
	w := encodeOn(&stack, n, template)
	var h C.ck_ulong
	r := C.ck_derive_key_data(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), C.int(kind), bytePtr(iv),
		bytePtr(data), C.ck_ulong(len(data)), C.ck_ulong(base), unsafe.SliceData(w), C.ck_ulong(len(template)), &h)
	if r != C.CK_OK {
		return 0, uint(r)
	}
	return uint(h), uint(r)
}

// UnwrapKey calls C_UnwrapKey(session, {mechanism, param}, unwrappingKey,
// wrapped, template) and returns the new key's handle (0 unless rv is
// CKR_OK).
func (m *Module) UnwrapKey(session, mechanism uint, param []byte, unwrappingKey uint, wrapped []byte, template []*pkcs11.Attribute) (handle uint, rv uint) {
	n := templateWords(template)
	if n < 0 {
		return 0, rvArgumentsBad
	}
	var stack [stackWords]C.ck_ulong
	w := encodeOn(&stack, n, template)
	var h C.ck_ulong
	r := C.ck_unwrap_key(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)),
		C.ck_ulong(unwrappingKey), bytePtr(wrapped), C.ck_ulong(len(wrapped)),
		unsafe.SliceData(w), C.ck_ulong(len(template)), &h)
	if r != C.CK_OK {
		return 0, uint(r)
	}
	return uint(h), uint(r)
}

// DestroyObject calls C_DestroyObject(session, object).
func (m *Module) DestroyObject(session, object uint) uint {
	return uint(C.ck_destroy_object(m.f, C.ck_ulong(session), C.ck_ulong(object)))
}

// GetAttributeValue reads the attributes types of object in one
// C_GetAttributeValue call, with room for maxLen[i] bytes for types[i]
// (CK_BBOOL: 1; CK_ULONG: the size of a C unsigned long, 8 on LP64; a label:
// the longest the caller can meet, see below).
//
// vals[i] is the value of types[i], or nil when the token marks it
// unavailable (ulValueLen CK_UNAVAILABLE_INFORMATION): an attribute the
// object does not have, a sensitive or unextractable one, or one longer than
// maxLen[i]. The token then answers CKR_ATTRIBUTE_TYPE_INVALID,
// CKR_ATTRIBUTE_SENSITIVE or CKR_BUFFER_TOO_SMALL, and still fills in the
// other attributes (PKCS#11 v2.40 §5.7): for those three return values, vals
// holds everything that was read. For any other rv but CKR_OK, vals is nil.
// An empty value is an empty, non-nil slice. The values share one buffer;
// each has its own capacity, so appending to one cannot overwrite another.
//
// # maxLen must be an upper bound on tokens that ignore it
//
// The NSS softoken (3.87) does not check ulValueLen for session objects: it
// copies the whole value whatever room it was given and answers CKR_OK with
// the real length (token objects, in its database, are checked). Each value
// gets a slot rounded up to a CK_ULONG, so a fixed-size attribute given too
// little room stays within its slot. When a token reports a length above
// maxLen[i] without answering CKR_BUFFER_TOO_SMALL, GetAttributeValue takes
// it that the token wrote that many bytes: vals[i] is nil, so is every value
// whose slot those bytes reached, and rv is CKR_BUFFER_TOO_SMALL. If the
// bytes went past the end of the buffer, Go memory is corrupted and
// GetAttributeValue panics. So, for variable-length attributes (CKA_LABEL,
// CKA_ID, CKA_VALUE) of objects the caller did not make, give a maxLen that
// no value can exceed, or use github.com/miekg/pkcs11, which asks for the
// lengths first.
func (m *Module) GetAttributeValue(session, object uint, types []uint, maxLen []int) (vals [][]byte, rv uint) {
	if len(types) != len(maxLen) || len(types) > MaxAttributes {
		return nil, rvArgumentsBad
	}
	n := 3 * len(types)
	for _, l := range maxLen {
		if l < 0 {
			return nil, rvArgumentsBad
		}
		n += wordsFor(l)
	}
	w := make([]C.ck_ulong, n+testSlack)[:n]
	off := 3 * len(types) * ulongSize
	for i, t := range types {
		w[3*i] = C.ck_ulong(t)
		w[3*i+1] = C.ck_ulong(off)
		w[3*i+2] = C.ck_ulong(maxLen[i])
		off += wordsFor(maxLen[i]) * ulongSize
	}
	r := uint(C.ck_get_attribute_value(m.f, C.ck_ulong(session), C.ck_ulong(object), unsafe.SliceData(w), C.ck_ulong(len(types))))
	switch r {
	case pkcs11.CKR_OK, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE, pkcs11.CKR_BUFFER_TOO_SMALL:
	default:
		return nil, r
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w))), len(w)*ulongSize)
	slot := func(i int) (start, end int) {
		start = int(w[3*i+1])
		return start, start + wordsFor(maxLen[i])*ulongSize
	}
	var unread uint64 // bit i: no value for types[i]
	for i := range types {
		l := w[3*i+2]
		if l == unavailable {
			unread |= 1 << i
			continue
		}
		if l <= C.ck_ulong(maxLen[i]) {
			continue
		}
		unread |= 1 << i
		if r == pkcs11.CKR_BUFFER_TOO_SMALL {
			// The token says it copied nothing (some answer the length
			// needed instead of CK_UNAVAILABLE_INFORMATION).
			continue
		}
		// The token wrote l bytes into maxLen[i] of room (NSS session
		// objects do) and did not say so.
		start, end := slot(i)
		if l > C.ck_ulong(len(b)-start) {
			panic(fmt.Sprintf("ck: C_GetAttributeValue of %s wrote %d bytes of attribute %#x into %d bytes of room, past the end of the buffer: memory is corrupted (give maxLen an upper bound)",
				m.path, uint64(l), types[i], maxLen[i]))
		}
		if reach := start + int(l); reach > end {
			for j := range types {
				if js, je := slot(j); j != i && js < reach && je > end {
					unread |= 1 << j
				}
			}
		}
		r = pkcs11.CKR_BUFFER_TOO_SMALL
	}
	vals = make([][]byte, len(types))
	for i := range types {
		if unread&(1<<i) != 0 {
			continue
		}
		start := int(w[3*i+1])
		end := start + int(w[3*i+2])
		vals[i] = b[start:end:end]
	}
	return vals, r
}

// MaxFixed is the most attributes GetFixedAttributes reads in one call.
const MaxFixed = 24

// fixedBuf is the stack buffer of a read of fixed-size attributes: header
// triples, then one CK_ULONG per value, then one CK_ULONG of slack that no
// slot owns.
type fixedBuf [4*MaxFixed + 1]C.ck_ulong

// Fixed is a read of fixed-size attributes to make with a hot call (see
// GetFixedAttributes): types[i] has room for sizes[i] bytes (1 for a
// CK_BBOOL, 8 for a CK_ULONG, at most 8); the values come back in
// Vals[i][:Lens[i]], Lens[i] -1 when the token gave none.
type Fixed struct {
	Types []uint
	Sizes []int
	Vals  [][8]byte
	Lens  []int
}

// prepare fills w for the read; false if the arguments are bad.
func (x *Fixed) prepare(w *fixedBuf) bool {
	n := len(x.Types)
	if n > MaxFixed || len(x.Sizes) != n || len(x.Vals) < n || len(x.Lens) < n {
		return false
	}
	for i, t := range x.Types {
		if x.Sizes[i] < 0 || x.Sizes[i] > ulongSize {
			return false
		}
		w[3*i] = C.ck_ulong(t)
		w[3*i+1] = C.ck_ulong((3*n + i) * ulongSize)
		w[3*i+2] = C.ck_ulong(x.Sizes[i])
	}
	return true
}

// decode reads the values out of w after a C_GetAttributeValue that
// answered r, and returns the read's return value.
func (x *Fixed) decode(m *Module, w *fixedBuf, r uint) uint {
	switch r {
	case pkcs11.CKR_OK, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE, pkcs11.CKR_BUFFER_TOO_SMALL:
	default:
		return r
	}
	n := len(x.Types)
	valOff := 3 * n
	var unread uint64
	end := (valOff + n) * ulongSize // the end of the slots
	for i := range x.Types {
		l := w[3*i+2]
		if l == unavailable {
			unread |= 1 << i
			continue
		}
		if l <= C.ck_ulong(x.Sizes[i]) {
			continue
		}
		unread |= 1 << i
		if r == pkcs11.CKR_BUFFER_TOO_SMALL {
			continue
		}
		// The token wrote l bytes into Sizes[i] of room (see
		// GetAttributeValue) and did not say so.
		start := (valOff + i) * ulongSize
		if l > C.ck_ulong(len(w)*ulongSize-start) {
			panic(fmt.Sprintf("ck: C_GetAttributeValue of %s wrote %d bytes of attribute %#x into %d bytes of room, past the end of the buffer: memory is corrupted",
				m.path, uint64(l), x.Types[i], x.Sizes[i]))
		}
		reach := start + int(l)
		for j := i + 1; j < n && (valOff+j)*ulongSize < min(reach, end); j++ {
			unread |= 1 << j
		}
		r = pkcs11.CKR_BUFFER_TOO_SMALL
	}
	for i := range x.Types {
		if unread&(1<<i) != 0 {
			x.Lens[i] = -1
			continue
		}
		l := int(w[3*i+2])
		x.Lens[i] = l
		v := unsafe.Slice((*byte)(unsafe.Pointer(&w[valOff+i])), ulongSize)
		copy(x.Vals[i][:], v[:l])
	}
	return r
}

// GetFixedAttributes reads attributes of fixed size (CK_BBOOL, CK_ULONG)
// of object in one C_GetAttributeValue, into x. It is GetAttributeValue
// for attributes of at most one CK_ULONG, with the same return values and
// the same reading of a token that reports more than it was given room
// for, but its buffer is on the stack: nothing allocated. More than
// MaxFixed types, or a size above 8, is CKR_ARGUMENTS_BAD.
func (m *Module) GetFixedAttributes(session, object uint, x *Fixed) (rv uint) {
	var w fixedBuf
	if !x.prepare(&w) {
		return rvArgumentsBad
	}
	r := uint(C.ck_get_attribute_value(m.f, C.ck_ulong(session), C.ck_ulong(object), &w[0], C.ck_ulong(len(x.Types))))
	return x.decode(m, &w, r)
}

// DeriveKeyDataRead is DeriveKeyData, then, if it made a key,
// GetFixedAttributes of it into x: the same two PKCS#11 calls, in one cgo
// crossing. readRv is the read's return value (meaningless unless rv is
// CKR_OK).
func (m *Module) DeriveKeyDataRead(session, mechanism uint, iv, data []byte, base uint, template []*pkcs11.Attribute, x *Fixed) (handle, rv, readRv uint) {
	kind := len(iv)
	if kind != 0 && kind != 8 && kind != 16 {
		return 0, rvArgumentsBad, 0
	}
	n := templateWords(template)
	var rw fixedBuf
	if n < 0 || !x.prepare(&rw) {
		return 0, rvArgumentsBad, 0
	}
	var stack [stackWords]C.ck_ulong
	w := encodeOn(&stack, n, template)
	var h C.ck_ulong
	var rr C.ck_rv
	r := C.ck_derive_key_data_read(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), C.int(kind), bytePtr(iv),
		bytePtr(data), C.ck_ulong(len(data)), C.ck_ulong(base), unsafe.SliceData(w), C.ck_ulong(len(template)), &h,
		&rw[0], C.ck_ulong(len(x.Types)), &rr)
	if r != C.CK_OK {
		return 0, uint(r), 0
	}
	return uint(h), uint(r), x.decode(m, &rw, uint(rr))
}

// UnwrapKeyRead is UnwrapKey, then, if it made a key, GetFixedAttributes
// of it into x: the same two PKCS#11 calls, in one cgo crossing.
func (m *Module) UnwrapKeyRead(session, mechanism uint, param []byte, unwrappingKey uint, wrapped []byte, template []*pkcs11.Attribute, x *Fixed) (handle, rv, readRv uint) {
	n := templateWords(template)
	var rw fixedBuf
	if n < 0 || !x.prepare(&rw) {
		return 0, rvArgumentsBad, 0
	}
	var stack [stackWords]C.ck_ulong
	w := encodeOn(&stack, n, template)
	var h C.ck_ulong
	var rr C.ck_rv
	r := C.ck_unwrap_key_read(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)),
		C.ck_ulong(unwrappingKey), bytePtr(wrapped), C.ck_ulong(len(wrapped)),
		unsafe.SliceData(w), C.ck_ulong(len(template)), &h, &rw[0], C.ck_ulong(len(x.Types)), &rr)
	if r != C.CK_OK {
		return 0, uint(r), 0
	}
	return uint(h), uint(r), x.decode(m, &rw, uint(rr))
}

// KCVWrapDestroy is EncryptInit(kcvMech, key) and Encrypt(in, kcvOut),
// then C_WrapKey of key under wrapping into wrapOut, then
// DestroyObject(key): the same four PKCS#11 calls in one cgo crossing,
// stopping at the first that fails. made is the number of calls made (1
// to 4: the last is the one that answered rv); kcvN and wrapN are the
// lengths C_Encrypt and C_WrapKey answered (wrapN the length needed when
// C_WrapKey answered CKR_BUFFER_TOO_SMALL).
func (m *Module) KCVWrapDestroy(session, kcvMech uint, in, kcvOut []byte, wrapMech uint, param []byte, wrapping, key uint, wrapOut []byte) (kcvN, wrapN, made int, rv uint) {
	kl, wl := C.ck_ulong(len(kcvOut)), C.ck_ulong(len(wrapOut))
	var n C.int
	r := uint(C.ck_kcv_wrap_destroy(m.f, C.ck_ulong(session), C.ck_ulong(kcvMech), bytePtr(in), C.ck_ulong(len(in)),
		bytePtr(kcvOut), &kl, C.ck_ulong(wrapMech), voidPtr(param), C.ck_ulong(len(param)), C.ck_ulong(wrapping),
		C.ck_ulong(key), bytePtr(wrapOut), &wl, &n))
	return int(kl), int(wl), int(n), r
}

// An Op is an operation made of an Init and its one-shot call, for Once.
type Op int

// The operations of Once.
const (
	OpEncrypt Op = iota // C_EncryptInit, C_Encrypt
	OpSign              // C_SignInit, C_Sign
)

// Calls names op's two PKCS#11 functions, for errors.
func (op Op) Calls() (init, call string) {
	if op == OpSign {
		return "C_SignInit", "C_Sign"
	}
	return "C_EncryptInit", "C_Encrypt"
}

// Once is op's Init, then, if it succeeded, its one-shot call into out:
// the same two PKCS#11 calls in one cgo crossing. made is the number of
// calls made (1 or 2: the last is the one that answered rv).
func (m *Module) Once(op Op, session, mechanism uint, param []byte, key uint, in, out []byte) (n, made int, rv uint) {
	l := C.ck_ulong(len(out))
	var k C.int
	r := uint(C.ck_once(m.f, C.int(op), C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)), C.ck_ulong(key),
		bytePtr(in), C.ck_ulong(len(in)), bytePtr(out), &l, &k))
	if r != C.CK_OK {
		return 0, int(k), r
	}
	return int(l), int(k), r
}

// EncryptInit calls C_EncryptInit(session, {mechanism, param}, key).
func (m *Module) EncryptInit(session, mechanism uint, param []byte, key uint) uint {
	return uint(C.ck_encrypt_init(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)), C.ck_ulong(key)))
}

// Encrypt calls C_Encrypt(session, in, out) once, with room for len(out)
// bytes, and returns the length of the ciphertext written to out. Give out
// room for the whole ciphertext (one block, say): that is what makes this one
// PKCS#11 call instead of two.
//
// An empty out makes the call a length query: n is the length needed, or an
// upper bound (NSS answers 48 for one AES-ECB block), and the operation stays
// active. If out is too short, the token answers CKR_BUFFER_TOO_SMALL, and
// the spec has it report the length needed in n and keep the operation for a
// retry, as SoftHSM2 does; but the NSS softoken (3.87) leaves n at len(out)
// and ends the operation. Any other return value ends the operation.
func (m *Module) Encrypt(session uint, in, out []byte) (n int, rv uint) {
	l := C.ck_ulong(len(out))
	r := C.ck_encrypt(m.f, C.ck_ulong(session), bytePtr(in), C.ck_ulong(len(in)), bytePtr(out), &l)
	if r != C.CK_OK && r != pkcs11.CKR_BUFFER_TOO_SMALL {
		return 0, uint(r)
	}
	return int(l), uint(r)
}

// SignInit calls C_SignInit(session, {mechanism, param}, key).
func (m *Module) SignInit(session, mechanism uint, param []byte, key uint) uint {
	return uint(C.ck_sign_init(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)), C.ck_ulong(key)))
}

// Sign calls C_Sign(session, in, out) once, with room for len(out) bytes
// (the MAC or signature length, which the caller knows), and returns the
// length of the signature written to out. An empty out makes the call a
// length query, as for Encrypt.
//
// Do not retry after CKR_BUFFER_TOO_SMALL on the NSS softoken (3.87): it
// reports the right length and keeps the operation, but it has already
// absorbed in, so the retry answers CKR_OK with the MAC of in||in
// (CKM_AES_MAC_GENERAL). Give out room for the whole signature.
func (m *Module) Sign(session uint, in, out []byte) (n int, rv uint) {
	l := C.ck_ulong(len(out))
	r := C.ck_sign(m.f, C.ck_ulong(session), bytePtr(in), C.ck_ulong(len(in)), bytePtr(out), &l)
	if r != C.CK_OK && r != pkcs11.CKR_BUFFER_TOO_SMALL {
		return 0, uint(r)
	}
	return int(l), uint(r)
}
