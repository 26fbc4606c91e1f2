package probe_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/probe"
)

// Probe what a token derives inside itself, here for one function:
// every strategy that computes AES-ECB is run and its keys checked by
// known answer (the probe imports test keys of known value, as session
// objects it destroys). The token is the examples' throwaway SoftHSM2
// token (see derive's examples), opened read-only as p11derive probe does:
// SoftHSM2 2.6.1 runs the native strategy only.
func ExampleRun() {
	tok, err := derive.Open(derive.Config{
		Module:   os.Getenv("P11DERIVE_MODULE"),
		Label:    os.Getenv("P11DERIVE_TOKEN"),
		PIN:      os.Getenv("P11DERIVE_PIN"),
		ReadOnly: true,
	})
	defer tok.Close()
	if err != nil {
		log.Fatal(err)
	}
	rep, err := probe.Run(context.Background(), tok, probe.Options{Functions: []string{"aes-ecb"}})
	if err != nil {
		log.Fatal(err)
	}
	// rep.WriteText(os.Stdout), WriteJSON or WriteMarkdown print the
	// whole report.
	for _, r := range rep.Results {
		fmt.Printf("%s %s: %s (%s)\n", r.KDF, r.Strategy, r.Status, r.VerifiedBy)
	}
	// Output:
	// aes-ecb native: verified (known-answer)
	// aes-ecb mac-unwrap: unavailable (none)
	// aes-ecb cmac-unwrap: unavailable (none)
	// aes-ecb stream-unwrap: unavailable (none)
}
