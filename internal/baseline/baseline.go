// Package baseline is the C baseline of p11derive's benchmarks: the
// PKCS#11 calls of one derivation, made by a C loop with nothing in
// between, on the same module instance (its function list, taken through
// package ck) and the same token. A benchmark runs it interleaved with
// p11derive, so that the two see the same machine, and reports the ratio.
// It is for benchmarks only.
//
// The loop reads DK's attributes back as p11derive does, for mac-unwrap
// and cmac-unwrap as well as native. Each mode makes, per
// derivation, exactly the calls p11derive makes for it:
//
//	Derive      C_DeriveKey(CKM_AES_ECB_ENCRYPT_DATA)
//	MACUnwrap   C_SignInit + C_Sign (CKM_AES_MAC_GENERAL, 16) of data||0^16, C_UnwrapKey(CKM_AES_ECB)
//	CMACUnwrap  C_EncryptInit + C_Encrypt of 0^16 (L), C_SignInit + C_Sign (CKM_AES_CMAC)
//	            of data||K1, C_UnwrapKey(CKM_AES_ECB)
//	DeriveWrap  as Derive, then (after the read-back) C_EncryptInit + C_Encrypt of 0^16
//	            with DK (its check value) and C_WrapKey of DK under the
//	            transport key (ImportWrapKey), one call into a 64-byte buffer:
//	            a wrap-mode row of p11derive batch, 6 calls
//
// then one C_GetAttributeValue of the fixed-size attributes p11derive reads
// back (the caller gives them) and C_DestroyObject. DK's template is the
// caller's: p11derive's own.
package baseline

/*
#cgo CFLAGS: -I${SRCDIR}/../ck -O2
#include <stdlib.h>
#include <string.h>
#include "ck.h"

#define BL_DERIVE 0
#define BL_MACUNWRAP 1
#define BL_CMACUNWRAP 2
#define BL_DERIVEWRAP 3
#define BL_MAX_READ 32

static void bl_dbl(unsigned char *dst, const unsigned char *src) {
	unsigned char carry = 0;
	for (int i = 15; i >= 0; i--) {
		unsigned char b = src[i];
		dst[i] = (unsigned char)(b << 1 | carry);
		carry = b >> 7;
	}
	if (carry)
		dst[15] ^= 0x87;
}

// bl_run makes n derivations of mode with the AES-128 base key k, the
// data's first two bytes set to the derivation's number (from first on).
// In DERIVEWRAP mode (a wrap-mode batch row), DK is derived as in DERIVE,
// read back, its check value computed (C_EncryptInit + C_Encrypt of a zero
// block, CKM_AES_ECB) and it is wrapped under wk with wmech (C_WrapKey into
// a buffer of the computed room, one call) before its destruction.
static ck_rv bl_run(ck_function_list *f, ck_ulong s, int mode, ck_ulong k, ck_attribute *tmpl, ck_ulong ntmpl,
		const ck_ulong *rtypes, const ck_ulong *rsizes, ck_ulong nr, unsigned char *data, long n, long first,
		ck_ulong wk, ck_ulong wmech) {
	ck_ulong rvals[BL_MAX_READ];
	ck_attribute rt[BL_MAX_READ];
	ck_rv rv;
	if (nr > BL_MAX_READ)
		return CK_ARGUMENTS_BAD;
	for (long i = first; i < first + n; i++) {
		ck_ulong d;
		data[0] = (unsigned char)i;
		data[1] = (unsigned char)(i >> 8);
		if (mode == BL_DERIVE || mode == BL_DERIVEWRAP) {
			struct { unsigned char *pData; ck_ulong ulLen; } sd = { data, 16 };
			ck_mechanism dm = { 0x1104UL, &sd, sizeof sd }; // CKM_AES_ECB_ENCRYPT_DATA
			if ((rv = f->C_DeriveKey(s, &dm, k, tmpl, ntmpl, &d)) != CK_OK)
				return rv;
		} else {
			unsigned char pad[16] = {0}, in[32], w[128];
			ck_ulong wlen = sizeof w, ml = 16;
			ck_mechanism um = { 0x1081UL, NULL, 0 }; // CKM_AES_ECB
			ck_mechanism mm = { 0x1084UL, &ml, sizeof ml }; // CKM_AES_MAC_GENERAL
			if (mode == BL_CMACUNWRAP) {
				unsigned char zero[16] = {0}, l[80];
				ck_ulong ll = sizeof l;
				ck_mechanism em = { 0x1081UL, NULL, 0 };
				if ((rv = f->C_EncryptInit(s, &em, k)) != CK_OK || (rv = f->C_Encrypt(s, zero, 16, l, &ll)) != CK_OK)
					return rv;
				bl_dbl(pad, l);
				memset(l, 0, sizeof l);
				mm.mechanism = 0x108AUL; // CKM_AES_CMAC
				mm.pParameter = NULL;
				mm.ulParameterLen = 0;
			}
			memcpy(in, data, 16);
			memcpy(in + 16, pad, 16);
			if ((rv = f->C_SignInit(s, &mm, k)) != CK_OK || (rv = f->C_Sign(s, in, 32, w, &wlen)) != CK_OK)
				return rv;
			if ((rv = f->C_UnwrapKey(s, &um, k, w, 16, tmpl, ntmpl, &d)) != CK_OK)
				return rv;
		}
		for (ck_ulong j = 0; j < nr; j++) {
			rt[j].type = rtypes[j];
			rt[j].pValue = &rvals[j];
			rt[j].ulValueLen = rsizes[j];
		}
		if ((rv = f->C_GetAttributeValue(s, d, rt, nr)) != CK_OK)
			return rv;
		if (mode == BL_DERIVEWRAP) {
			unsigned char zero[16] = {0}, kcv[16], w[64];
			ck_ulong kl = sizeof kcv, wl = sizeof w;
			ck_mechanism em = { 0x1081UL, NULL, 0 }; // CKM_AES_ECB
			ck_mechanism wm = { wmech, NULL, 0 };
			if ((rv = f->C_EncryptInit(s, &em, d)) != CK_OK || (rv = f->C_Encrypt(s, zero, 16, kcv, &kl)) != CK_OK)
				return rv;
			if ((rv = f->C_WrapKey(s, &wm, wk, d, w, &wl)) != CK_OK)
				return rv;
		}
		if ((rv = f->C_DestroyObject(s, d)) != CK_OK)
			return rv;
	}
	return CK_OK;
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/internal/ck"
)

// Mode is what one derivation of the loop computes.
type Mode int

// The modes: the calls of p11derive's Native (aes-ecb), MACUnwrap and
// CMACUnwrap strategies.
const (
	Derive Mode = iota
	MACUnwrap
	CMACUnwrap
	// DeriveWrap is a wrap-mode batch row: Derive's calls, DK's check
	// value and C_WrapKey; it needs ImportWrapKey.
	DeriveWrap
)

// Loop is a session of the C baseline, with its base key and DK's
// template in C memory.
type Loop struct {
	m      *ck.Module
	s      uint
	base   uint
	tmpl   *C.ck_attribute
	ntmpl  int
	vals   unsafe.Pointer
	rtypes *C.ck_ulong
	rsizes *C.ck_ulong
	nr     int
	data   *C.uchar
	next   int
	wrap   uint // the transport key (DeriveWrap)
	wmech  uint
}

// Open opens a session on slot of the module (already loaded and
// initialised, or loaded here), logs in if pin is not empty (a login the
// module already has is fine), imports an AES-128 base key of value key
// (CKA_DERIVE, CKA_ENCRYPT, CKA_SIGN, CKA_UNWRAP) and keeps data (one
// AES block), tmpl, DK's template, and read (the attributes read back,
// with their sizes).
func Open(module, initArgs string, slot uint, pin string, key, data []byte, tmpl []*pkcs11.Attribute, read []uint, sizes []int) (*Loop, error) {
	if len(data) != 16 {
		return nil, fmt.Errorf("baseline: %d bytes of data, want one AES block", len(data))
	}
	m, err := ck.Open(module, initArgs)
	if err != nil {
		return nil, err
	}
	s, rv := m.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if rv != pkcs11.CKR_OK {
		return nil, fmt.Errorf("baseline: C_OpenSession: %w", pkcs11.Error(rv))
	}
	l := &Loop{m: m, s: s}
	if pin != "" {
		if rv := m.Login(s, pkcs11.CKU_USER, pin); rv != pkcs11.CKR_OK && rv != pkcs11.CKR_USER_ALREADY_LOGGED_IN {
			l.Close()
			return nil, fmt.Errorf("baseline: C_Login: %w", pkcs11.Error(rv))
		}
	}
	l.base, rv = m.CreateObject(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, key),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
	})
	if rv != pkcs11.CKR_OK {
		l.Close()
		return nil, fmt.Errorf("baseline: C_CreateObject: %w", pkcs11.Error(rv))
	}
	if len(read) != len(sizes) || len(read) > C.BL_MAX_READ {
		l.Close()
		return nil, fmt.Errorf("baseline: %d attributes to read, %d sizes", len(read), len(sizes))
	}
	// DK's template, its values and the data in C memory, built once.
	total := 16
	for _, a := range tmpl {
		total += (len(a.Value) + 7) &^ 7
	}
	l.vals = C.calloc(C.size_t(total), 1)
	l.tmpl = (*C.ck_attribute)(C.calloc(C.size_t(len(tmpl)+1), C.size_t(unsafe.Sizeof(C.ck_attribute{}))))
	attrs := unsafe.Slice(l.tmpl, len(tmpl))
	buf := unsafe.Slice((*byte)(l.vals), total)
	copy(buf, data)
	l.data = (*C.uchar)(unsafe.Pointer(&buf[0]))
	off := 16
	for i, a := range tmpl {
		copy(buf[off:], a.Value)
		attrs[i]._type = C.ck_ulong(a.Type)
		attrs[i].pValue = unsafe.Pointer(&buf[off])
		attrs[i].ulValueLen = C.ck_ulong(len(a.Value))
		off += (len(a.Value) + 7) &^ 7
	}
	l.ntmpl = len(tmpl)
	l.rtypes = (*C.ck_ulong)(C.calloc(C.size_t(len(read)+1), C.size_t(unsafe.Sizeof(C.ck_ulong(0)))))
	l.rsizes = (*C.ck_ulong)(C.calloc(C.size_t(len(read)+1), C.size_t(unsafe.Sizeof(C.ck_ulong(0)))))
	rt, rs := unsafe.Slice(l.rtypes, len(read)), unsafe.Slice(l.rsizes, len(read))
	for i := range read {
		rt[i], rs[i] = C.ck_ulong(read[i]), C.ck_ulong(sizes[i])
	}
	l.nr = len(read)
	return l, nil
}

// ImportWrapKey imports the transport key of DeriveWrap, an AES key of
// value key (CKA_WRAP, a session object), and sets the wrap mechanism
// (CKM_AES_KEY_WRAP, say; one without a parameter).
func (l *Loop) ImportWrapKey(key []byte, mech uint) error {
	h, rv := l.m.CreateObject(l.s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE, key),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
	})
	if rv != pkcs11.CKR_OK {
		return fmt.Errorf("baseline: C_CreateObject of the transport key: %w", pkcs11.Error(rv))
	}
	l.wrap, l.wmech = h, mech
	return nil
}

// Run makes n derivations of mode in one C loop (one cgo crossing).
func (l *Loop) Run(mode Mode, n int) error {
	if mode == DeriveWrap && l.wrap == 0 {
		return fmt.Errorf("baseline: DeriveWrap without a transport key (ImportWrapKey)")
	}
	rv := C.bl_run((*C.ck_function_list)(l.m.FunctionList()), C.ck_ulong(l.s), C.int(mode), C.ck_ulong(l.base),
		l.tmpl, C.ck_ulong(l.ntmpl), l.rtypes, l.rsizes, C.ck_ulong(l.nr), l.data, C.long(n), C.long(l.next),
		C.ck_ulong(l.wrap), C.ck_ulong(l.wmech))
	l.next += n
	if rv != C.CK_OK {
		return fmt.Errorf("baseline: mode %d: %w", mode, pkcs11.Error(rv))
	}
	return nil
}

// Close destroys the base key, closes the session and frees the C memory.
func (l *Loop) Close() {
	if l.base != 0 {
		l.m.DestroyObject(l.s, l.base)
	}
	if l.wrap != 0 {
		l.m.DestroyObject(l.s, l.wrap)
	}
	l.m.CloseSession(l.s)
	C.free(l.vals)
	C.free(unsafe.Pointer(l.tmpl))
	C.free(unsafe.Pointer(l.rtypes))
	C.free(unsafe.Pointer(l.rsizes))
	*l = Loop{}
}
