// Command choose-strategy asks a token, before anything runs, how each
// strategy would fare at computing a function from a base key — which
// mechanisms the token lists, which attributes the key lacks, how many
// PKCS#11 calls it takes — and chooses one in code, by a policy of its own,
// then derives with it. derive.Token.Plan makes no PKCS#11 call but one
// C_GetMechanismList.
//
//	P11DERIVE_MODULE=... go run ./examples/choose-strategy --token payments --key K \
//	  --kdf aes-ecb --data 00112233445566778899aabbccddeeff [--avoid mac-unwrap,cmac-unwrap]
//
// The policy here: never a strategy named in --avoid (say, a security
// policy that forbids base keys which may both MAC and unwrap); among the
// others, first those that the token lists and the key allows, cheapest
// first, then those the key allows although the token does not list their
// mechanisms (tokens do not always list what they run). A plan is what the
// token says, not what it does: a token may list a mechanism and refuse it
// for this use (NSS softoken lists CKM_AES_CTR, and refuses it for
// C_UnwrapKey), so the candidates are tried in order, and a refusal moves on
// to the next. derive.Token.Derive with Strategy left at Auto does the same
// with the default policy; this program shows how to have your own.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "choose-strategy:", err)
		os.Exit(1)
	}
}

// rank orders the strategies to try by the policy above.
func rank(plans []derive.StrategyPlan, avoid []string) []derive.StrategyPlan {
	var listed, unlisted []derive.StrategyPlan
	for _, p := range plans {
		switch {
		case slices.Contains(avoid, string(p.Strategy)):
		case p.Problem == nil:
			listed = append(listed, p)
		case len(p.Missing) == 0 && errors.Is(p.Problem, derive.ErrUnsupported) && !errors.Is(p.Problem, derive.ErrInvalidInput):
			unlisted = append(unlisted, p) // the key allows it; the token does not list it
		}
	}
	byCalls := func(a, b derive.StrategyPlan) int { return a.Calls - b.Calls }
	slices.SortStableFunc(listed, byCalls)
	slices.SortStableFunc(unlisted, byCalls)
	return append(listed, unlisted...)
}

// refused reports whether the token refused a mechanism or a key's use with
// it: worth trying the next strategy.
func refused(err error) (*derive.TokenError, bool) {
	var te *derive.TokenError
	if !errors.As(err, &te) {
		return nil, false
	}
	switch te.CKR() {
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID, pkcs11.CKR_FUNCTION_NOT_SUPPORTED,
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_KEY_TYPE_INCONSISTENT:
		return te, true
	}
	return nil, false
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("choose-strategy", flag.ContinueOnError)
	module := fs.String("module", os.Getenv("P11DERIVE_MODULE"), "PKCS#11 module")
	initArgs := fs.String("init-args", os.Getenv("P11DERIVE_INIT_ARGS"), "C_Initialize arguments (NSS softoken)")
	tokenLabel := fs.String("token", "", "token label")
	slot := fs.Int("slot", -1, "slot ID")
	keyLabel := fs.String("key", "", "label of the base key")
	kdf := fs.String("kdf", "aes-ecb", "function: "+strings.Join(derive.FunctionNames(), ", "))
	iv := fs.String("iv", "", "CBC IV, hex")
	dataHex := fs.String("data", "", "derivation data, hex")
	keyType := fs.String("key-type", "aes", "DK's type: aes, des2, des3, generic")
	n := fs.Int("len", 16, "DK's length in bytes")
	avoid := fs.String("avoid", "", "strategies the policy forbids, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	data, err := hex.DecodeString(*dataHex)
	if err != nil || len(data) == 0 {
		return errors.New("--data: derivation data in hex is required")
	}
	params := map[string]string{}
	if *iv != "" {
		params["iv"] = *iv
	}
	f, err := derive.ParseFunction(*kdf, params)
	if err != nil {
		return err
	}
	kt, err := derive.ParseKeyType(*keyType, *n)
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
	info := tok.Info()
	fmt.Fprintf(stdout, "token %q (%s %s)\n", info.Label, strings.TrimSpace(info.ManufacturerID), strings.TrimSpace(info.Model))
	base, err := tok.FindKey(ctx, *keyLabel)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "base key %q: derive=%v sign=%v unwrap=%v encrypt=%v\n", base.Label, base.Derive, base.Sign, base.Unwrap, base.Encrypt)

	// The plan: what each strategy needs, and whether the token and the
	// key have it. Nothing runs.
	req := derive.Request{Function: f, Data: data, KeyType: kt}
	plans, err := tok.Plan(base, req)
	if err != nil {
		return err
	}
	printPlans(stdout, plans)

	res, err := deriveFirst(ctx, tok, base, req, rank(plans, strings.Split(*avoid, ",")), stdout)
	if err != nil {
		return err
	}
	kcv, err := tok.CheckValue(ctx, res.Key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "DK: %s by %s in %d calls, check value %x\n", res.Function.Name(), res.Strategy, res.Calls, kcv)
	return nil
}

// printPlans prints what each strategy needs, and whether it can run.
func printPlans(stdout io.Writer, plans []derive.StrategyPlan) {
	fmt.Fprintf(stdout, "%-14s %5s  %s\n", "strategy", "calls", "can it run?")
	for _, p := range plans {
		verdict := "yes"
		if p.Problem != nil {
			verdict = strings.TrimPrefix(p.Problem.Error(), "p11derive: ")
		}
		fmt.Fprintf(stdout, "%-14s %5d  %s\n", p.Strategy, p.Calls, verdict)
	}
}

// deriveFirst derives with exactly the first strategy of ranked; if the
// token refuses it, with the next.
func deriveFirst(ctx context.Context, tok *derive.Token, base *derive.Key, req derive.Request, ranked []derive.StrategyPlan, stdout io.Writer) (*derive.Result, error) {
	for _, p := range ranked {
		req.Strategy = p.Strategy
		res, err := tok.Derive(ctx, base, req)
		if err == nil {
			fmt.Fprintf(stdout, "chosen: %s\n", p.Strategy)
			return res, nil
		}
		te, ok := refused(err)
		if !ok {
			return nil, err
		}
		fmt.Fprintf(stdout, "%s: refused by the token (%s: %v), next\n", p.Strategy, te.Call, te.Err)
	}
	return nil, errors.New("no strategy the policy allows runs here")
}
