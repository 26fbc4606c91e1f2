// Package mechanisms mirrors PKCS #11 v3.0 mechanism parameter structures as
// typed Go structs and marshals them into C memory for exactly one PKCS #11
// call.
//
// github.com/miekg/pkcs11 passes a mechanism parameter as a byte slice that it
// copies into C memory. That is enough for flat structures, but most
// key-derivation parameters (CK_SP800_108_KDF_PARAMS, CK_HKDF_PARAMS,
// CK_KEY_DERIVATION_STRING_DATA, ...) contain pointers to further data, and
// CK_DERIVED_KEY even contains a pointer through which the token writes a
// result. This package produces the structure bytes for miekg/pkcs11 and
// places everything the embedded pointers refer to in C memory that it owns.
//
// # Which function to call
//
// Fill in one of the parameter types (every type implementing Params) and
// hand it to Call together with the mechanism number and a function that
// performs the PKCS #11 call:
//
//	p := mechanisms.SP800108KDFParams{
//		PRFType: pkcs11.CKM_SHA256_HMAC,
//		DataParams: []mechanisms.PRFDataParam{
//			mechanisms.IterationVariable{Format: &mechanisms.CounterFormat{WidthInBits: 32}},
//			mechanisms.ByteArray(label),
//		},
//		AdditionalDerivedKeys: []mechanisms.DerivedKey{{Template: macKeyTemplate}},
//	}
//	var key pkcs11.ObjectHandle
//	err := mechanisms.Call(mechanisms.CKM_SP800_108_COUNTER_KDF, p, func(m []*pkcs11.Mechanism) error {
//		var err error
//		key, err = ctx.DeriveKey(session, m, baseKey, encKeyTemplate)
//		return err
//	})
//	// p.AdditionalDerivedKeys[0].Handle now holds the second key's handle.
//
// Every structure is described once, by struct tags naming its C members, and
// a single reflection-driven marshaller lays out all of them (in the manner of
// github.com/google/go-tpm/tpm2). Invalid values (nil entries, values that do
// not fit in a CK_ULONG, combinations the specification forbids, a parameter
// type that does not belong to a well-known mechanism) make Call return an
// error before fn is called.
//
// # Memory rule
//
// Call allocates the out-of-line data of one parameter structure (byte
// strings, arrays of CK_PRF_DATA_PARAM, CK_DERIVED_KEY and CK_ATTRIBUTE,
// the formats they point to, and the CK_OBJECT_HANDLE slots behind phKey) in
// a single C allocation outside the Go heap. The memory lives exactly as long
// as fn runs: it is freed when fn returns or panics, after output fields
// (DerivedKey.Handle) have been copied back into the Go value. There is no
// Free method. The mechanism slice handed to fn, and any copy of it, must not
// be used after fn returns: the pointers inside it dangle from then on.
//
// # ABI
//
// Structures are laid out as the C compiler of the build platform lays out
// pkcs11t.h on Unix-like systems: CK_ULONG is C unsigned long (its size is
// taken from cgo, so it is 4 bytes on 32-bit Linux and 8 bytes on 64-bit
// Linux and macOS), CK_BBOOL is one byte, pointers have the platform's size,
// and every member has its natural alignment. The tests compare every size and
// every member offset with the C compiler's view of the NSS headers.
//
// Windows is refused at build time: there PKCS #11 structures are packed to
// 1 byte (#pragma pack(push, cryptoki, 1)) and CK_ULONG is 32 bits even on
// 64-bit systems, which this package does not implement. The package also
// needs cgo (for C memory) and refuses to build without it.
package mechanisms
