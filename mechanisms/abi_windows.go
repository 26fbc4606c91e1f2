//go:build windows

package mechanisms

// On Windows, PKCS #11 structures are packed to 1 byte
// (#pragma pack(push, cryptoki, 1)) and CK_ULONG is 32 bits even on 64-bit
// systems. This package only implements the naturally aligned Unix layout,
// so it refuses to build here rather than hand the token misplaced members.
var _ = mechanisms_does_not_support_windows_where_pkcs11_structs_are_1_byte_packed
