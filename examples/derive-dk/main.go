// Command derive-dk is the question p11derive answers, as a program: a base
// key K lives in a PKCS#11 token and is not extractable; derive
// DK = E(data, K) and keep DK in the token, without DK ever being on this
// host.
//
//	P11DERIVE_MODULE=/usr/lib/softhsm/libsofthsm2.so P11DERIVE_PIN=... \
//	  go run ./examples/derive-dk --token payments --key K --data 00112233445566778899aabbccddeeff
//
// It prints how the token computed DK, DK's attributes (sensitive, not
// extractable) and its check value, computed inside the token.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/p11derive/p11derive/derive"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "derive-dk:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("derive-dk", flag.ContinueOnError)
	module := fs.String("module", os.Getenv("P11DERIVE_MODULE"), "PKCS#11 module")
	initArgs := fs.String("init-args", os.Getenv("P11DERIVE_INIT_ARGS"), "C_Initialize arguments (NSS softoken)")
	tokenLabel := fs.String("token", "", "token label")
	slot := fs.Int("slot", -1, "slot ID")
	keyLabel := fs.String("key", "", "label of the base key K")
	dataHex := fs.String("data", "", "derivation data, hex (a whole number of blocks)")
	label := fs.String("label", "", "DK's label")
	keep := fs.Bool("keep", false, "keep DK in the token (a token object) after the program ends")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := hex.DecodeString(*dataHex)
	if err != nil || len(data) == 0 {
		return errors.New("--data: derivation data in hex is required")
	}
	cfg := derive.Config{Module: *module, InitArgs: *initArgs, Label: *tokenLabel, PIN: os.Getenv("P11DERIVE_PIN")}
	if *slot >= 0 {
		s := uint(*slot)
		cfg.Slot = &s
	}

	// Open the token: a pool of sessions, logged in with the PIN if there is one.
	tok, err := derive.Open(cfg)
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := context.Background()

	// K: found by label. p11derive reads its attributes, never its value.
	k, err := tok.FindKey(ctx, *keyLabel)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "K:  %q, %d bytes, sensitive=%v extractable=%v\n", k.Label, k.Len, k.Sensitive, k.Extractable)

	// DK = E(data, K), AES-ECB into an AES key as long as the data: computed
	// inside the token by whichever strategy this token and K allow.
	kt, err := derive.ParseKeyType("aes", len(data))
	if err != nil {
		return err
	}
	res, err := tok.Derive(ctx, k, derive.Request{
		Function:   derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data:       data,
		KeyType:    kt,
		Label:      *label,
		Persistent: *keep,
	})
	if err != nil {
		return err
	}
	dk := res.Key
	fmt.Fprintf(stdout, "DK: %s by %s in %d PKCS#11 calls\n", res.Function.Name(), res.Strategy, res.Calls)
	fmt.Fprintf(stdout, "DK: sensitive=%v extractable=%v token-object=%v\n", dk.Sensitive, dk.Extractable, dk.Token)
	for _, w := range res.Warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}

	// The check value, E_DK(0)'s first bytes, computed in the token: how two
	// parties compare keys without showing them.
	kcv, err := tok.CheckValue(ctx, dk)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "DK: check value %x\n", kcv)
	return nil
}
