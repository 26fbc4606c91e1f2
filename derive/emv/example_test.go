package emv_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log"
	"os"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/emv"
	"github.com/p11derive/p11derive/derive/scheme"
)

// Derive a card's ICC master key from the issuer master key by EMV Book 2
// option A, inside the token. The IMK is pyemv's published example key,
// imported for the example (a real IMK is generated in the HSM or
// entered by key ceremony); the MK is pyemv's documented result
// 73AD54688CEF2934B0979857E3C719F1, compared by check value.
func ExampleICCMasterKey() {
	ctx := context.Background()
	tok, err := derive.Open(derive.Config{
		Module: os.Getenv("P11DERIVE_MODULE"),
		Label:  os.Getenv("P11DERIVE_TOKEN"),
		PIN:    os.Getenv("P11DERIVE_PIN"),
	})
	defer tok.Close()
	if err != nil {
		log.Fatal(err)
	}
	value, _ := hex.DecodeString("0123456789ABCDEFFEDCBA9876543210")
	imk, err := tok.Import(ctx, derive.KeySpec{Label: "IMK", Type: derive.KeyDES2, Usage: derive.UseDerive}, value)
	if err != nil {
		log.Fatal(err)
	}

	mk, err := emv.ICCMasterKey(ctx, tok, imk, emv.OptionA, "12345678901234567", "01", scheme.Options{Label: "MK"})
	if err != nil {
		log.Fatal(err)
	}
	// The MK may only derive (session keys): its check value is computed
	// on a session copy that may encrypt, destroyed at once.
	kcv, err := tok.CheckValueBy(ctx, mk.Key, derive.KCVECB)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s by %s, %d derivation(s)\n", mk.KeyType, mk.Function, mk.Strategy, mk.Derivations)
	fmt.Printf("MK %q: sensitive=%v, check value %X\n", mk.Key.Label, mk.Key.Sensitive, kcv.Value)
	// Output:
	// DES2 des3-ecb by native, 1 derivation(s)
	// MK "MK": sensitive=true, check value C64DC2
}
