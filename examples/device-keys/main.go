// Command device-keys gives each device of a production run its own AES key,
// diversified from a master key inside the token, and hands each key out
// wrapped under a transport key — the key-injection station's job. No
// device key is ever in the clear on this host: each is derived in the
// token, wrapped there by C_WrapKey, and destroyed.
//
//	P11DERIVE_MODULE=... P11DERIVE_PIN=... go run ./examples/device-keys \
//	  --token factory --master DEV-MASTER --transport KEK-LINE-3 04a1b2c3d4e5f6 04a1b2c3d4e5f7 ...
//
// For a device UID (up to 15 bytes, hex), the diversification input is the
// UID padded to one AES block with ISO/IEC 9797-1 method 2 (0x80 then zeros),
// and the device key is DK = AES-ECB(master, block), AES-128. It is wrapped
// with CKM_AES_KEY_WRAP (RFC 3394), which gives the same bytes on every
// token (CKM_AES_KEY_WRAP_PAD does not: see the README). The output is CSV:
// uid, wrapped key (hex), check value — what the programming station loads
// into the device together with the transport key's identity.
//
// For thousands of devices from a file, use p11derive batch, which does the
// same with parallel sessions, progress, and resumption.
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
		fmt.Fprintln(os.Stderr, "device-keys:", err)
		os.Exit(1)
	}
}

// ckmAESKeyWrap is CKM_AES_KEY_WRAP (RFC 3394).
const ckmAESKeyWrap = 0x2109

// block pads a device UID to one AES block: UID || 80 || 00...
func block(uid []byte) ([]byte, error) {
	if len(uid) == 0 || len(uid) > 15 {
		return nil, fmt.Errorf("a UID of %d bytes (1 to 15)", len(uid))
	}
	b := make([]byte, 16)
	copy(b, uid)
	b[len(uid)] = 0x80
	return b, nil
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("device-keys", flag.ContinueOnError)
	module := fs.String("module", os.Getenv("P11DERIVE_MODULE"), "PKCS#11 module")
	initArgs := fs.String("init-args", os.Getenv("P11DERIVE_INIT_ARGS"), "C_Initialize arguments (NSS softoken)")
	tokenLabel := fs.String("token", "", "token label")
	slot := fs.Int("slot", -1, "slot ID")
	master := fs.String("master", "", "label of the AES master key")
	transport := fs.String("transport", "", "label of the AES transport key (CKA_WRAP)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("give the device UIDs, in hex")
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
	m, err := tok.FindKey(ctx, *master)
	if err != nil {
		return err
	}
	kek, err := tok.FindKey(ctx, *transport)
	if err != nil {
		return err
	}
	if kek.Cipher() != derive.AES || !kek.Wrap {
		return fmt.Errorf("transport key %q must be an AES key with CKA_WRAP", kek.Label)
	}

	fmt.Fprintln(stdout, "uid,wrapped,kcv")
	for _, arg := range fs.Args() {
		uid, err := hex.DecodeString(arg)
		if err != nil {
			return fmt.Errorf("UID %q: not hex", arg)
		}
		data, err := block(uid)
		if err != nil {
			return fmt.Errorf("UID %s: %v", arg, err)
		}
		wrapped, kcv, err := deviceKey(ctx, tok, m, kek, data)
		if err != nil {
			return fmt.Errorf("UID %s: %w", arg, err)
		}
		fmt.Fprintf(stdout, "%x,%x,%x\n", uid, wrapped, kcv)
	}
	return nil
}

// deviceKey derives one device key, wraps it under kek and destroys it.
func deviceKey(ctx context.Context, tok *derive.Token, master, kek *derive.Key, data []byte) (wrapped, kcv []byte, err error) {
	res, err := tok.Derive(ctx, master, derive.Request{
		Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB},
		Data:     data,
		KeyType:  derive.KeyAES128,
		// Extractable lets the key be wrapped; it stays sensitive, so its
		// value can leave the token only encrypted. Encrypt is for the check
		// value; nothing else is needed of a key that lives for one wrap.
		Extractable: true,
		Usage:       derive.UseEncrypt,
	})
	if err != nil {
		return nil, nil, err
	}
	// Destroyed on every path, whatever happens next.
	defer func() {
		if derr := tok.Destroy(context.WithoutCancel(ctx), res.Key); err == nil {
			err = derr
		}
	}()
	if kcv, err = tok.CheckValue(ctx, res.Key); err != nil {
		return nil, nil, err
	}
	// C_WrapKey: the wrapped key is DK encrypted under the transport key,
	// all of it computed in the token.
	if wrapped, err = tok.Wrap(ctx, kek, res.Key, ckmAESKeyWrap, nil); err != nil {
		return nil, nil, err
	}
	return wrapped, kcv, nil
}
