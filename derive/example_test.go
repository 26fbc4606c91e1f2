package derive_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/p11derive/p11derive/derive"
)

// The examples reach their token as the p11derive command does, through
// P11DERIVE_MODULE and P11DERIVE_PIN, with the token's label in
// P11DERIVE_TOKEN. In the tests, TestMain sets them to a throwaway
// SoftHSM2 token.

// open is the examples' derive.Open.
func open() *derive.Token {
	tok, err := derive.Open(derive.Config{
		Module: os.Getenv("P11DERIVE_MODULE"),
		Label:  os.Getenv("P11DERIVE_TOKEN"),
		PIN:    os.Getenv("P11DERIVE_PIN"),
	})
	if err != nil {
		log.Fatal(err)
	}
	return tok
}

// importFIPS197Key makes a session base key of known value, the AES-128
// key of FIPS 197 appendix C.1, that may derive: a test's base key (a
// real one is generated in the token, or was put there by a key
// ceremony).
func importFIPS197Key(ctx context.Context, tok *derive.Token, label string) {
	k, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	if _, err := tok.Import(ctx, derive.KeySpec{Label: label, Type: derive.KeyAES128, Usage: derive.UseDerive}, k); err != nil {
		log.Fatal(err)
	}
}

// Open a token by its label and log in with the PIN. An error says why
// (no such module, no such token with the tokens there are, a refused
// login, as a CKR code); Close is safe on the nil Token Open returns then.
func ExampleOpen() {
	tok, err := derive.Open(derive.Config{
		Module: os.Getenv("P11DERIVE_MODULE"), // e.g. /usr/lib/softhsm/libsofthsm2.so
		Label:  os.Getenv("P11DERIVE_TOKEN"),  // or URI: "pkcs11:token=payments", Serial, Slot
		PIN:    os.Getenv("P11DERIVE_PIN"),    // empty: no login
	})
	defer tok.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("token %q\n", strings.TrimSpace(tok.Info().Label))

	_, err = derive.Open(derive.Config{Module: os.Getenv("P11DERIVE_MODULE"), Label: "no-such-token"})
	fmt.Println(errors.Is(err, derive.ErrNotFound))
	// Output:
	// token "example"
	// true
}

// Find a base key by its label.
func ExampleToken_FindKey() {
	ctx := context.Background()
	tok := open()
	defer tok.Close()
	importFIPS197Key(ctx, tok, "issuer-master-key")

	k, err := tok.FindKey(ctx, "issuer-master-key")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s, %d bytes, derive=%v sensitive=%v extractable=%v\n",
		k.Label, derive.KeyTypeName(k.Type), k.Len, k.Derive, k.Sensitive, k.Extractable)

	_, err = tok.FindKey(ctx, "no-such-key")
	fmt.Println(err)
	// Output:
	// issuer-master-key: aes, 16 bytes, derive=true sensitive=true extractable=false
	// p11derive: no secret key labelled "no-such-key": not found
}

// Derive DK = AES-ECB(data, K) inside the token and compare it with the
// expected key by check value, without ever seeing DK. K is the FIPS 197
// C.1 key and data its plaintext, so DK is FIPS 197's ciphertext
// 69c4e0d86a7b0430d8cdb78070b4c55a, whose check value is bc0af6.
func ExampleToken_Derive() {
	ctx := context.Background()
	tok := open()
	defer tok.Close()
	importFIPS197Key(ctx, tok, "K")
	k, err := tok.FindKey(ctx, "K")
	if err != nil {
		log.Fatal(err)
	}

	data, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	res, err := tok.Derive(ctx, k, derive.Request{
		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data:     data,
		KeyType:  derive.KeyAES128,
		Label:    "DK",
	})
	if err != nil {
		log.Fatal(err)
	}
	kcv, err := tok.CheckValue(ctx, res.Key) // computed in the token
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s by %s\n", res.Function.Name(), res.Strategy)
	fmt.Printf("DK %q: sensitive=%v extractable=%v token-object=%v\n",
		res.Key.Label, res.Key.Sensitive, res.Key.Extractable, res.Key.Token)
	fmt.Printf("check value %x\n", kcv)
	// Output:
	// aes-ecb by native
	// DK "DK": sensitive=true extractable=false token-object=false
	// check value bc0af6
}

// Ask which strategies could derive from this key on this token, before
// deriving: on SoftHSM2, with a key that may only derive, native alone
// (each other plan's Problem says why not: SoftHSM2 has no
// CKM_AES_MAC_GENERAL, the key lacks CKA_SIGN and CKA_UNWRAP, ...).
func ExampleToken_Plan() {
	ctx := context.Background()
	tok := open()
	defer tok.Close()
	importFIPS197Key(ctx, tok, "K")
	k, err := tok.FindKey(ctx, "K")
	if err != nil {
		log.Fatal(err)
	}
	plans, err := tok.Plan(k, derive.Request{
		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data:     make([]byte, 16),
		KeyType:  derive.KeyAES128,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range plans {
		fmt.Printf("%s: can run: %v\n", p.Strategy, p.Problem == nil)
	}
	// Output:
	// native: can run: true
	// mac-unwrap: can run: false
	// cmac-unwrap: can run: false
	// stream-unwrap: can run: false
}

// Derive on whichever of two HSMs holding the same base key is least busy.
// NewGroup finds the key on both and proves it the same by its check value;
// a member that fails as a device is taken out, the request derived again
// on the other, and the member brought back by a health check. DK is a
// session key on the member that made it (res.Member). (Not run by go
// test: the examples' lab has one token.)
func ExampleNewGroup() {
	ctx := context.Background()
	var members []*derive.Token
	for _, uri := range []string{"pkcs11:token=hsm-a", "pkcs11:token=hsm-b"} {
		tok, err := derive.Open(derive.Config{Module: os.Getenv("P11DERIVE_MODULE"), URI: uri, PIN: os.Getenv("P11DERIVE_PIN")})
		if err != nil {
			log.Fatal(err)
		}
		defer tok.Close()
		members = append(members, tok)
	}
	g, err := derive.NewGroup(ctx, derive.GroupConfig{Members: members, Base: derive.Selector{Label: "issuer-master-key"}})
	if err != nil {
		log.Fatal(err) // a *derive.MismatchError names both tokens if their keys differ
	}
	defer g.Close()
	res, err := g.Derive(ctx, derive.Request{
		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data:     []byte("device 0000001\x00\x00"),
		KeyType:  derive.KeyAES128,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Destroy(ctx, res)
	kcv, err := res.Member.CheckValue(ctx, res.Key)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("DK %x on token %q\n", kcv, strings.TrimSpace(res.Member.Info().Label))
}
