package c11_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"log"
	"os"

	"github.com/ThalesGroup/crypto11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/c11"
)

// Derive DK inside the token from a base key crypto11 found, and use DK
// through crypto11: here as a cipher.Block, encrypting the zero block
// (DK's check value; FIPS 197's key and plaintext make DK FIPS 197's
// ciphertext, whose check value is bc0af6). crypto11 is configured first:
// it refuses a module someone else initialised. The Token is closed before
// the crypto11 context, whose Close finalises the module.
func ExampleDeriver_Derive() {
	ctx := context.Background()
	module, label, pin := os.Getenv("P11DERIVE_MODULE"), os.Getenv("P11DERIVE_TOKEN"), os.Getenv("P11DERIVE_PIN")
	c, err := crypto11.Configure(&crypto11.Config{Path: module, TokenLabel: label, Pin: pin})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	tok, err := derive.Open(derive.Config{Module: module, Label: label, PIN: pin})
	if err != nil {
		log.Fatal(err)
	}
	defer tok.Close()

	// A base key of known value for the example, by CKA_ID and label
	// (crypto11 cannot import a key value).
	value, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f")
	if _, err := tok.Import(ctx, derive.KeySpec{Label: "K", ID: []byte("K"), Type: derive.KeyAES128, Usage: derive.UseDerive}, value); err != nil {
		log.Fatal(err)
	}
	base, err := c.FindKey([]byte("K"), []byte("K"))
	if err != nil || base == nil {
		log.Fatal("crypto11 finds no K: ", err)
	}

	data, _ := hex.DecodeString("00112233445566778899aabbccddeeff")
	dk, res, err := c11.New(c, tok).Derive(ctx, base, derive.Request{
		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data:     data,
		KeyType:  derive.KeyAES128,
		Label:    "DK",
	})
	if err != nil {
		log.Fatal(err)
	}
	b, err := c11.Block(dk) // or dk.NewGCM(), dk.NewCBCEncrypterCloser(iv)
	if err != nil {
		log.Fatal(err)
	}
	out := make([]byte, b.BlockSize())
	b.Encrypt(out, make([]byte, b.BlockSize()))
	fmt.Printf("DK by %s; E_DK(0) starts %x\n", res.Strategy, out[:3])
	// Output:
	// DK by native; E_DK(0) starts bc0af6
}
