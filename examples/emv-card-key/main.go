// Command emv-card-key diversifies an EMV issuer master key into a card's
// master key, inside the token: EMV Book 2 Annex A1.4.1, option A.
//
// From the PAN and the PAN sequence number (PSN), Y is the rightmost 16
// digits of PAN || PSN (left-padded with zeros), packed as 8 bytes of BCD.
// The card's master key is the two-key Triple DES key
//
//	MK = 3DES(IMK)[Y] || 3DES(IMK)[Y XOR FF..FF]
//
// with DES parity set, which is DK = E(data, K) for K = IMK, data = Y || ~Y
// and the ECB mode of Triple DES: one p11derive derivation, with MK made
// inside the token and never on this host.
//
//	P11DERIVE_MODULE=... P11DERIVE_PIN=... go run ./examples/emv-card-key \
//	  --token issuer --imk IMK-AC --pan 5413330089600010 --psn 01 [--label MK-AC-...] [--keep]
//
// The full EMV scheme (session keys, option B for long PANs, the other
// master keys) belongs to a library of its own; this is the diversification
// step, to show the shape.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/p11derive/p11derive/derive"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "emv-card-key:", err)
		os.Exit(1)
	}
}

// optionA returns Y || ~Y for a PAN and a PSN (two decimal digits, "00" when
// the card has none): EMV Book 2 A1.4.1 option A's input to 3DES-ECB.
func optionA(pan, psn string) ([]byte, error) {
	if psn == "" {
		psn = "00"
	}
	if !digits(pan) || len(pan) < 12 || len(pan) > 19 {
		return nil, errors.New("the PAN is 12 to 19 decimal digits")
	}
	if !digits(psn) || len(psn) != 2 {
		return nil, errors.New("the PAN sequence number is 2 decimal digits")
	}
	x := pan + psn
	if len(x) < 16 {
		x = strings.Repeat("0", 16-len(x)) + x
	}
	x = x[len(x)-16:]
	data := make([]byte, 16)
	for i := range 8 {
		data[i] = (x[2*i]-'0')<<4 | (x[2*i+1] - '0')
		data[8+i] = ^data[i]
	}
	return data, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("emv-card-key", flag.ContinueOnError)
	module := fs.String("module", os.Getenv("P11DERIVE_MODULE"), "PKCS#11 module")
	initArgs := fs.String("init-args", os.Getenv("P11DERIVE_INIT_ARGS"), "C_Initialize arguments (NSS softoken)")
	tokenLabel := fs.String("token", "", "token label")
	slot := fs.Int("slot", -1, "slot ID")
	imk := fs.String("imk", "", "label of the issuer master key (DES2 or DES3)")
	pan := fs.String("pan", "", "primary account number")
	psn := fs.String("psn", "00", "PAN sequence number")
	label := fs.String("label", "", "the card master key's label")
	keep := fs.Bool("keep", false, "keep the card master key in the token (a token object)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := optionA(*pan, *psn)
	if err != nil {
		return err
	}
	cfg := derive.Config{Module: *module, InitArgs: *initArgs, Label: *tokenLabel, PIN: os.Getenv("P11DERIVE_PIN")}
	if *slot >= 0 {
		s := uint(*slot)
		cfg.Slot = &s
	}
	tok, err := derive.Open(cfg)
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := context.Background()
	k, err := tok.FindKey(ctx, *imk)
	if err != nil {
		return err
	}
	res, err := tok.Derive(ctx, k, derive.Request{
		Function:   derive.Encrypt{Cipher: derive.DES3, Mode: derive.ECB},
		Data:       data, // Y || ~Y: two blocks, the two halves of MK
		KeyType:    derive.KeyDES2,
		Label:      *label,
		Persistent: *keep,
	})
	if err != nil {
		return err
	}
	kcv, err := tok.CheckValue(ctx, res.Key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "PAN %s PSN %s: Y = %X\n", *pan, *psn, data[:8])
	fmt.Fprintf(stdout, "card master key: DES2, %s by %s, sensitive=%v extractable=%v, check value %X\n",
		res.Function.Name(), res.Strategy, res.Key.Sensitive, res.Key.Extractable, kcv)
	return nil
}
