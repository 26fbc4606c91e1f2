//go:build windows

package ck

// On Windows, PKCS #11 structures are packed to 1 byte
// (#pragma pack(push, cryptoki, 1)) and CK_ULONG is 32 bits even on 64-bit
// systems. ck.h only declares the naturally aligned Unix layout, so the
// package refuses to build here rather than hand the token misplaced members.
var _ = ck_does_not_support_windows_where_pkcs11_structs_are_1_byte_packed
