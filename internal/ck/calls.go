package ck

// The calls made once per Token, session, key or report, rather than once
// per derivation: module, slot, token and mechanism information, sessions
// and login, finding, creating, copying, generating, wrapping and changing
// objects. They go through the same function list as the hot calls in
// ck.go, with the same conventions (handles and return values are plain
// PKCS#11 numbers), but favour simplicity over allocations.

/*
#include <string.h>
#include "ck.h"

#define CK_MAX_ATTRS_COLD 64

#define CK_NEED(fn) do { if (f == NULL) return CK_ARGUMENTS_BAD; if (f->fn == NULL) return CK_FUNCTION_NOT_SUPPORTED; } while (0)

static ck_rv ck_finalize(ck_function_list *f) { CK_NEED(C_Finalize); return f->C_Finalize(NULL); }

static ck_rv ck_get_info(ck_function_list *f, ck_info *i) { CK_NEED(C_GetInfo); return f->C_GetInfo(i); }

static ck_rv ck_get_slot_list(ck_function_list *f, unsigned char present, ck_ulong *slots, ck_ulong *n) {
	CK_NEED(C_GetSlotList);
	return f->C_GetSlotList(present, slots, n);
}

static ck_rv ck_get_token_info(ck_function_list *f, ck_ulong slot, ck_token_info *i) {
	CK_NEED(C_GetTokenInfo);
	return f->C_GetTokenInfo(slot, i);
}

static ck_rv ck_get_mechanism_list(ck_function_list *f, ck_ulong slot, ck_ulong *list, ck_ulong *n) {
	CK_NEED(C_GetMechanismList);
	return f->C_GetMechanismList(slot, list, n);
}

static ck_rv ck_get_mechanism_info(ck_function_list *f, ck_ulong slot, ck_ulong mech, ck_mechanism_info *i) {
	CK_NEED(C_GetMechanismInfo);
	return f->C_GetMechanismInfo(slot, mech, i);
}

static ck_rv ck_open_session(ck_function_list *f, ck_ulong slot, ck_ulong flags, ck_ulong *s) {
	CK_NEED(C_OpenSession);
	return f->C_OpenSession(slot, flags, NULL, NULL, s);
}

static ck_rv ck_close_session(ck_function_list *f, ck_ulong s) { CK_NEED(C_CloseSession); return f->C_CloseSession(s); }

static ck_rv ck_get_session_info(ck_function_list *f, ck_ulong s, ck_session_info *i) {
	CK_NEED(C_GetSessionInfo);
	return f->C_GetSessionInfo(s, i);
}

static ck_rv ck_login(ck_function_list *f, ck_ulong s, ck_ulong user, unsigned char *pin, ck_ulong pinLen) {
	CK_NEED(C_Login);
	return f->C_Login(s, user, pin, pinLen);
}


static ck_rv ck_create_object(ck_function_list *f, ck_ulong s, const ck_ulong *w, ck_ulong n, ck_ulong *h) {
	ck_attribute a[CK_MAX_ATTRS_COLD];
	CK_NEED(C_CreateObject);
	if (n > CK_MAX_ATTRS_COLD)
		return CK_ARGUMENTS_BAD;
	ck_template(a, w, n);
	return f->C_CreateObject(s, n ? a : NULL, n, h);
}

static ck_rv ck_copy_object(ck_function_list *f, ck_ulong s, ck_ulong obj, const ck_ulong *w, ck_ulong n, ck_ulong *h) {
	ck_attribute a[CK_MAX_ATTRS_COLD];
	CK_NEED(C_CopyObject);
	if (n > CK_MAX_ATTRS_COLD)
		return CK_ARGUMENTS_BAD;
	ck_template(a, w, n);
	return f->C_CopyObject(s, obj, n ? a : NULL, n, h);
}

static ck_rv ck_set_attribute_value(ck_function_list *f, ck_ulong s, ck_ulong obj, const ck_ulong *w, ck_ulong n) {
	ck_attribute a[CK_MAX_ATTRS_COLD];
	CK_NEED(C_SetAttributeValue);
	if (n > CK_MAX_ATTRS_COLD)
		return CK_ARGUMENTS_BAD;
	ck_template(a, w, n);
	return f->C_SetAttributeValue(s, obj, n ? a : NULL, n);
}

static ck_rv ck_find_objects_init(ck_function_list *f, ck_ulong s, const ck_ulong *w, ck_ulong n) {
	ck_attribute a[CK_MAX_ATTRS_COLD];
	CK_NEED(C_FindObjectsInit);
	if (n > CK_MAX_ATTRS_COLD)
		return CK_ARGUMENTS_BAD;
	ck_template(a, w, n);
	return f->C_FindObjectsInit(s, n ? a : NULL, n);
}

static ck_rv ck_find_objects(ck_function_list *f, ck_ulong s, ck_ulong *hs, ck_ulong max, ck_ulong *n) {
	CK_NEED(C_FindObjects);
	return f->C_FindObjects(s, hs, max, n);
}

static ck_rv ck_find_objects_final(ck_function_list *f, ck_ulong s) {
	CK_NEED(C_FindObjectsFinal);
	return f->C_FindObjectsFinal(s);
}

static ck_rv ck_generate_key(ck_function_list *f, ck_ulong s, ck_ulong mech, void *param, ck_ulong paramLen,
		const ck_ulong *w, ck_ulong n, ck_ulong *h) {
	ck_attribute a[CK_MAX_ATTRS_COLD];
	ck_mechanism m = { mech, param, paramLen };
	CK_NEED(C_GenerateKey);
	if (n > CK_MAX_ATTRS_COLD)
		return CK_ARGUMENTS_BAD;
	ck_template(a, w, n);
	return f->C_GenerateKey(s, &m, n ? a : NULL, n, h);
}

static ck_rv ck_wrap_key(ck_function_list *f, ck_ulong s, ck_ulong mech, void *param, ck_ulong paramLen,
		ck_ulong wrapping, ck_ulong key, unsigned char *out, ck_ulong *outLen) {
	ck_mechanism m = { mech, param, paramLen };
	CK_NEED(C_WrapKey);
	return f->C_WrapKey(s, &m, wrapping, key, out, outLen);
}

// ck_get_attribute_lengths asks for the lengths of n attributes (every
// pValue NULL): the first step of reading variable-length values.
static ck_rv ck_get_attribute_lengths(ck_function_list *f, ck_ulong s, ck_ulong obj, const ck_ulong *types, ck_ulong *lens, ck_ulong n) {
	ck_attribute a[CK_MAX_ATTRS_COLD];
	CK_NEED(C_GetAttributeValue);
	if (n > CK_MAX_ATTRS_COLD)
		return CK_ARGUMENTS_BAD;
	for (ck_ulong i = 0; i < n; i++) {
		a[i].type = types[i];
		a[i].pValue = NULL;
		a[i].ulValueLen = 0;
	}
	ck_rv rv = f->C_GetAttributeValue(s, obj, n ? a : NULL, n);
	for (ck_ulong i = 0; i < n; i++)
		lens[i] = a[i].ulValueLen;
	return rv;
}

#define CK_MAX_ENTRIES 64
#define CK_MAX_ENTRY_VALUE 1024

// ck_get_attribute_array reads the array attribute typ of obj (such as
// CKA_UNWRAP_TEMPLATE) in the three steps of PKCS#11 v2.40 §5.7: the
// array's length, each entry's type and length, then the values, into vals
// (CK_MAX_ENTRY_VALUE bytes per entry). *state: 0 absent, 1 present, -1 the
// token gave it in a form that cannot be read safely (too many entries,
// values too long, or the pointers it was given at creation handed back
// instead of our buffers filled).
static ck_rv ck_get_attribute_array(ck_function_list *f, ck_ulong s, ck_ulong obj, ck_ulong typ,
		ck_ulong *types, ck_ulong *lens, unsigned char *vals, int *n, int *state) {
	CK_NEED(C_GetAttributeValue);
	*n = 0;
	*state = 0;
	ck_attribute top = { typ, NULL, 0 };
	ck_rv rv = f->C_GetAttributeValue(s, obj, &top, 1);
	if (rv == 0x12 || (rv == 0 && top.ulValueLen == CK_UNAVAILABLE)) // CKR_ATTRIBUTE_TYPE_INVALID
		return CK_OK;
	if (rv != CK_OK)
		return rv;
	*state = 1;
	ck_ulong count = top.ulValueLen / sizeof(ck_attribute);
	if (top.ulValueLen % sizeof(ck_attribute) != 0 || count > CK_MAX_ENTRIES) {
		*state = -1;
		return CK_OK;
	}
	if (count == 0)
		return CK_OK;
	ck_attribute arr[CK_MAX_ENTRIES];
	memset(arr, 0, sizeof arr);
	top.pValue = arr;
	top.ulValueLen = count * sizeof(ck_attribute);
	if ((rv = f->C_GetAttributeValue(s, obj, &top, 1)) != CK_OK)
		return rv;
	for (ck_ulong i = 0; i < count; i++) {
		if (arr[i].ulValueLen > CK_MAX_ENTRY_VALUE) {
			*state = -1;
			return CK_OK;
		}
		arr[i].pValue = vals + i * CK_MAX_ENTRY_VALUE;
	}
	top.pValue = arr;
	top.ulValueLen = count * sizeof(ck_attribute);
	if ((rv = f->C_GetAttributeValue(s, obj, &top, 1)) != CK_OK)
		return rv;
	for (ck_ulong i = 0; i < count; i++) {
		if (arr[i].pValue != (void *)(vals + i * CK_MAX_ENTRY_VALUE) || arr[i].ulValueLen > CK_MAX_ENTRY_VALUE) {
			*state = -1;
			return CK_OK;
		}
		types[i] = arr[i].type;
		lens[i] = arr[i].ulValueLen;
	}
	*n = (int)count;
	return CK_OK;
}
*/
import "C"

import (
	"strings"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// text is a blank-padded CK_UTF8CHAR field as a Go string, trimmed of the
// trailing blanks PKCS#11 pads with and of the NUL bytes some tokens pad
// with instead (a TPM-backed token's model field, for one).
func text(b []C.uchar) string {
	return strings.TrimRight(string(unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b))), " \x00")
}

func version(v C.ck_version) pkcs11.Version {
	return pkcs11.Version{Major: byte(v.major), Minor: byte(v.minor)}
}

// GetInfo calls C_GetInfo.
func (m *Module) GetInfo() (pkcs11.Info, uint) {
	var i C.ck_info
	if rv := uint(C.ck_get_info(m.f, &i)); rv != pkcs11.CKR_OK {
		return pkcs11.Info{}, rv
	}
	return pkcs11.Info{
		CryptokiVersion:    version(i.cryptokiVersion),
		ManufacturerID:     text(i.manufacturerID[:]),
		Flags:              uint(i.flags),
		LibraryDescription: text(i.libraryDescription[:]),
		LibraryVersion:     version(i.libraryVersion),
	}, pkcs11.CKR_OK
}

// GetSlotList calls C_GetSlotList: the count, then the list (again while
// the token answers CKR_BUFFER_TOO_SMALL, a slot having appeared between
// the two calls).
func (m *Module) GetSlotList(tokenPresent bool) ([]uint, uint) {
	present := C.uchar(0)
	if tokenPresent {
		present = 1
	}
	return ulongList(func(list *C.ck_ulong, n *C.ck_ulong) C.ck_rv {
		return C.ck_get_slot_list(m.f, present, list, n)
	})
}

// ulongList makes the two-step call of a function answering a list of
// CK_ULONGs (slots, mechanisms).
func ulongList(call func(list *C.ck_ulong, n *C.ck_ulong) C.ck_rv) ([]uint, uint) {
	for range 8 {
		var n C.ck_ulong
		if rv := uint(call(nil, &n)); rv != pkcs11.CKR_OK {
			return nil, rv
		}
		if n == 0 {
			return []uint{}, pkcs11.CKR_OK
		}
		list := make([]C.ck_ulong, n)
		rv := uint(call(&list[0], &n))
		if rv == pkcs11.CKR_BUFFER_TOO_SMALL {
			continue
		}
		if rv != pkcs11.CKR_OK {
			return nil, rv
		}
		out := make([]uint, min(int(n), len(list)))
		for i := range out {
			out[i] = uint(list[i])
		}
		return out, pkcs11.CKR_OK
	}
	return nil, pkcs11.CKR_BUFFER_TOO_SMALL
}

// GetTokenInfo calls C_GetTokenInfo. The strings are trimmed of trailing
// blanks and NULs.
func (m *Module) GetTokenInfo(slot uint) (pkcs11.TokenInfo, uint) {
	var i C.ck_token_info
	if rv := uint(C.ck_get_token_info(m.f, C.ck_ulong(slot), &i)); rv != pkcs11.CKR_OK {
		return pkcs11.TokenInfo{}, rv
	}
	return pkcs11.TokenInfo{
		Label:              text(i.label[:]),
		ManufacturerID:     text(i.manufacturerID[:]),
		Model:              text(i.model[:]),
		SerialNumber:       text(i.serialNumber[:]),
		Flags:              uint(i.flags),
		MaxSessionCount:    uint(i.ulMaxSessionCount),
		SessionCount:       uint(i.ulSessionCount),
		MaxRwSessionCount:  uint(i.ulMaxRwSessionCount),
		RwSessionCount:     uint(i.ulRwSessionCount),
		MaxPinLen:          uint(i.ulMaxPinLen),
		MinPinLen:          uint(i.ulMinPinLen),
		TotalPublicMemory:  uint(i.ulTotalPublicMemory),
		FreePublicMemory:   uint(i.ulFreePublicMemory),
		TotalPrivateMemory: uint(i.ulTotalPrivateMemory),
		FreePrivateMemory:  uint(i.ulFreePrivateMemory),
		HardwareVersion:    version(i.hardwareVersion),
		FirmwareVersion:    version(i.firmwareVersion),
		UTCTime:            text(i.utcTime[:]),
	}, pkcs11.CKR_OK
}

// GetMechanismList calls C_GetMechanismList.
func (m *Module) GetMechanismList(slot uint) ([]uint, uint) {
	return ulongList(func(list *C.ck_ulong, n *C.ck_ulong) C.ck_rv {
		return C.ck_get_mechanism_list(m.f, C.ck_ulong(slot), list, n)
	})
}

// GetMechanismInfo calls C_GetMechanismInfo.
func (m *Module) GetMechanismInfo(slot, mechanism uint) (pkcs11.MechanismInfo, uint) {
	var i C.ck_mechanism_info
	if rv := uint(C.ck_get_mechanism_info(m.f, C.ck_ulong(slot), C.ck_ulong(mechanism), &i)); rv != pkcs11.CKR_OK {
		return pkcs11.MechanismInfo{}, rv
	}
	return pkcs11.MechanismInfo{MinKeySize: uint(i.ulMinKeySize), MaxKeySize: uint(i.ulMaxKeySize), Flags: uint(i.flags)}, pkcs11.CKR_OK
}

// Finalize calls C_Finalize on the function list. p11derive never does
// (see Open): it is for tests that must end what an initialised list holds,
// such as p11-kit-client.so's connection to its server (and the server's
// "p11-kit remote" child), which lasts until C_Finalize. The Module is of
// no use afterwards.
func (m *Module) Finalize() uint {
	return uint(C.ck_finalize(m.f))
}

// OpenSession calls C_OpenSession (no application pointer, no callback).
func (m *Module) OpenSession(slot, flags uint) (session uint, rv uint) {
	var s C.ck_ulong
	if rv := uint(C.ck_open_session(m.f, C.ck_ulong(slot), C.ck_ulong(flags), &s)); rv != pkcs11.CKR_OK {
		return 0, rv
	}
	return uint(s), pkcs11.CKR_OK
}

// CloseSession calls C_CloseSession.
func (m *Module) CloseSession(session uint) uint {
	return uint(C.ck_close_session(m.f, C.ck_ulong(session)))
}

// GetSessionInfo calls C_GetSessionInfo.
func (m *Module) GetSessionInfo(session uint) (pkcs11.SessionInfo, uint) {
	var i C.ck_session_info
	if rv := uint(C.ck_get_session_info(m.f, C.ck_ulong(session), &i)); rv != pkcs11.CKR_OK {
		return pkcs11.SessionInfo{}, rv
	}
	return pkcs11.SessionInfo{SlotID: uint(i.slotID), State: uint(i.state), Flags: uint(i.flags), DeviceError: uint(i.ulDeviceError)}, pkcs11.CKR_OK
}

// Login calls C_Login. The PIN is copied into a Go buffer that is cleared
// when the call returns.
func (m *Module) Login(session, userType uint, pin string) uint {
	b := []byte(pin)
	defer clear(b)
	return uint(C.ck_login(m.f, C.ck_ulong(session), C.ck_ulong(userType), bytePtr(b), C.ck_ulong(len(b))))
}

// encoded serialises a template for the cold calls; ok is false if it
// cannot be passed (too long, or a nil entry).
func encoded(template []*pkcs11.Attribute) (w []C.ck_ulong, ok bool) {
	n := templateWords(template)
	if n < 0 {
		return nil, false
	}
	w = make([]C.ck_ulong, max(n, 1))
	encodeTemplate(w[:n], template)
	return w, true
}

// CreateObject calls C_CreateObject.
func (m *Module) CreateObject(session uint, template []*pkcs11.Attribute) (handle uint, rv uint) {
	w, ok := encoded(template)
	if !ok {
		return 0, rvArgumentsBad
	}
	defer clear(w) // key values may be in it
	var h C.ck_ulong
	if rv := uint(C.ck_create_object(m.f, C.ck_ulong(session), &w[0], C.ck_ulong(len(template)), &h)); rv != pkcs11.CKR_OK {
		return 0, rv
	}
	return uint(h), pkcs11.CKR_OK
}

// CopyObject calls C_CopyObject.
func (m *Module) CopyObject(session, object uint, template []*pkcs11.Attribute) (handle uint, rv uint) {
	w, ok := encoded(template)
	if !ok {
		return 0, rvArgumentsBad
	}
	var h C.ck_ulong
	if rv := uint(C.ck_copy_object(m.f, C.ck_ulong(session), C.ck_ulong(object), &w[0], C.ck_ulong(len(template)), &h)); rv != pkcs11.CKR_OK {
		return 0, rv
	}
	return uint(h), pkcs11.CKR_OK
}

// SetAttributeValue calls C_SetAttributeValue.
func (m *Module) SetAttributeValue(session, object uint, template []*pkcs11.Attribute) uint {
	w, ok := encoded(template)
	if !ok {
		return rvArgumentsBad
	}
	return uint(C.ck_set_attribute_value(m.f, C.ck_ulong(session), C.ck_ulong(object), &w[0], C.ck_ulong(len(template))))
}

// FindObjectsInit calls C_FindObjectsInit.
func (m *Module) FindObjectsInit(session uint, template []*pkcs11.Attribute) uint {
	w, ok := encoded(template)
	if !ok {
		return rvArgumentsBad
	}
	return uint(C.ck_find_objects_init(m.f, C.ck_ulong(session), &w[0], C.ck_ulong(len(template))))
}

// FindObjects calls C_FindObjects for at most max handles.
func (m *Module) FindObjects(session uint, max int) ([]uint, uint) {
	if max <= 0 {
		return nil, rvArgumentsBad
	}
	hs := make([]C.ck_ulong, max)
	var n C.ck_ulong
	if rv := uint(C.ck_find_objects(m.f, C.ck_ulong(session), &hs[0], C.ck_ulong(max), &n)); rv != pkcs11.CKR_OK {
		return nil, rv
	}
	out := make([]uint, min(int(n), max))
	for i := range out {
		out[i] = uint(hs[i])
	}
	return out, pkcs11.CKR_OK
}

// FindObjectsFinal calls C_FindObjectsFinal.
func (m *Module) FindObjectsFinal(session uint) uint {
	return uint(C.ck_find_objects_final(m.f, C.ck_ulong(session)))
}

// GenerateKey calls C_GenerateKey(session, {mechanism, param}, template).
func (m *Module) GenerateKey(session, mechanism uint, param []byte, template []*pkcs11.Attribute) (handle uint, rv uint) {
	w, ok := encoded(template)
	if !ok {
		return 0, rvArgumentsBad
	}
	var h C.ck_ulong
	if rv := uint(C.ck_generate_key(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)),
		&w[0], C.ck_ulong(len(template)), &h)); rv != pkcs11.CKR_OK {
		return 0, rv
	}
	return uint(h), pkcs11.CKR_OK
}

// WrapKey calls C_WrapKey once, with room for len(out) bytes, and returns
// the length of the wrapped key written to out. An empty out makes the
// call a length query. As for Encrypt, give out room for the whole result
// (the caller knows it: RFC 3394 adds 8 bytes to the key), which makes the
// wrap one PKCS#11 call instead of two.
func (m *Module) WrapKey(session, mechanism uint, param []byte, wrappingKey, key uint, out []byte) (n int, rv uint) {
	l := C.ck_ulong(len(out))
	r := uint(C.ck_wrap_key(m.f, C.ck_ulong(session), C.ck_ulong(mechanism), voidPtr(param), C.ck_ulong(len(param)),
		C.ck_ulong(wrappingKey), C.ck_ulong(key), bytePtr(out), &l))
	if r != pkcs11.CKR_OK && r != pkcs11.CKR_BUFFER_TOO_SMALL {
		return 0, r
	}
	return int(l), r
}

// ReadAttributes reads attributes of any length, as PKCS#11 v2.40 §5.7
// describes: one C_GetAttributeValue for the lengths, one for the values.
// vals[i] is nil for an attribute the token does not give (absent,
// sensitive); the return value is then that of the length query
// (CKR_ATTRIBUTE_TYPE_INVALID or CKR_ATTRIBUTE_SENSITIVE), and the values
// that exist are read all the same. calls is the number of PKCS#11 calls
// made (1, or 2 when there were values to read). Use GetAttributeValue,
// one call, when the sizes are known.
func (m *Module) ReadAttributes(session, object uint, types []uint) (vals [][]byte, calls int, rv uint) {
	if len(types) > MaxAttributes {
		return nil, 0, rvArgumentsBad
	}
	if len(types) == 0 {
		return [][]byte{}, 0, pkcs11.CKR_OK
	}
	ts := make([]C.ck_ulong, len(types))
	lens := make([]C.ck_ulong, len(types))
	for i, t := range types {
		ts[i] = C.ck_ulong(t)
	}
	first := uint(C.ck_get_attribute_lengths(m.f, C.ck_ulong(session), C.ck_ulong(object), &ts[0], &lens[0], C.ck_ulong(len(types))))
	switch first {
	case pkcs11.CKR_OK, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE:
	default:
		return nil, 1, first
	}
	var want []uint
	var room []int
	var at []int
	for i, l := range lens {
		if l == unavailable {
			continue
		}
		want = append(want, types[i])
		room = append(room, int(l))
		at = append(at, i)
	}
	vals = make([][]byte, len(types))
	if len(want) == 0 {
		return vals, 1, first
	}
	got, r := m.GetAttributeValue(session, object, want, room)
	switch r {
	case pkcs11.CKR_OK, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID, pkcs11.CKR_ATTRIBUTE_SENSITIVE:
	default:
		return nil, 2, r
	}
	for j, i := range at {
		vals[i] = got[j]
	}
	if r == pkcs11.CKR_OK {
		r = first
	}
	return vals, 2, r
}

// ArrayEntry is one attribute of an array attribute's value.
type ArrayEntry struct {
	Type  uint
	Value []byte
}

// Array states of GetAttributeArray.
const (
	ArrayAbsent     = 0  // the object has no such attribute
	ArrayPresent    = 1  // read: entries hold it
	ArrayUnreadable = -1 // the token gave it in a form that cannot be read safely
)

// GetAttributeArray reads an array attribute (CKA_UNWRAP_TEMPLATE,
// CKA_DERIVE_TEMPLATE, CKA_WRAP_TEMPLATE) in three C_GetAttributeValue
// calls: the array's size, its entries' types and lengths, their values.
// Entries hold at most 64 attributes of at most 1 KiB each; a larger array,
// or a token that hands back the pointers it was given when the object was
// made (NSS softoken does) rather than filling the buffers it is given, is
// ArrayUnreadable.
func (m *Module) GetAttributeArray(session, object, typ uint) (entries []ArrayEntry, state int, rv uint) {
	const maxEntries, maxValue = C.CK_MAX_ENTRIES, C.CK_MAX_ENTRY_VALUE
	types := make([]C.ck_ulong, maxEntries)
	lens := make([]C.ck_ulong, maxEntries)
	vals := make([]byte, maxEntries*maxValue)
	var n, st C.int
	r := uint(C.ck_get_attribute_array(m.f, C.ck_ulong(session), C.ck_ulong(object), C.ck_ulong(typ),
		&types[0], &lens[0], (*C.uchar)(unsafe.Pointer(&vals[0])), &n, &st))
	if r != pkcs11.CKR_OK {
		return nil, ArrayAbsent, r
	}
	for i := range int(n) {
		v := make([]byte, int(lens[i]))
		copy(v, vals[i*maxValue:])
		entries = append(entries, ArrayEntry{Type: uint(types[i]), Value: v})
	}
	return entries, int(st), pkcs11.CKR_OK
}
