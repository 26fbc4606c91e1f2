package derive

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// The secrets the secrets test greps for: a PIN and key values nobody
// would write by chance.
const secretPIN = "S3cr3t-PIN-5ec2e7"

var secretKey = lab.Unhex("5ec2e7c0ffee4b1dd00dfeedfacecafe0badc0de5ec2e7c0ffee4b1d1234abcd")

// secretForms are the ways a secret could appear in text: raw, hex in
// either case, base64.
func secretForms(b []byte) []string {
	return []string{string(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b)}
}

// secretGrep collects texts (errors, outputs) and secrets, and checks that
// no text holds a secret in any form.
type secretGrep struct {
	texts   []string
	secrets map[string][]byte
}

func (g *secretGrep) add(format string, args ...any) {
	g.texts = append(g.texts, fmt.Sprintf(format, args...))
}

func (g *secretGrep) err(err error) {
	if err != nil {
		g.add("%v", err)
		g.add("%+v", err)
	}
}

func (g *secretGrep) result(res *Result) {
	if res == nil {
		return
	}
	b, _ := json.Marshal(res)
	g.add("%s", b)
	b, _ = json.Marshal(res.Profile())
	g.add("%s", b)
	g.add("%+v %+v %v", res, *res.Key, res.Warnings)
}

// leaks lists the texts holding a secret (or an 8-byte piece of one) in
// some form.
func (g *secretGrep) leaks() []string {
	var out []string
	for name, s := range g.secrets {
		pieces := [][]byte{s}
		if len(s) >= 16 {
			// Any 8-byte piece of a key or block, too.
			pieces = append(pieces, chunks(s)...)
		}
		for _, p := range pieces {
			for _, form := range secretForms(p) {
				for _, text := range g.texts {
					if strings.Contains(text, form) {
						out = append(out, fmt.Sprintf("%s (%q) appears in: %s", name, form, text))
					}
				}
			}
		}
	}
	return out
}

func (g *secretGrep) check(t *testing.T) {
	t.Helper()
	for _, l := range g.leaks() {
		t.Error(l)
	}
	// The control: the grep does see secrets.
	for _, text := range []string{"pin " + secretPIN, "key " + strings.ToUpper(hex.EncodeToString(secretKey[8:16])),
		"raw " + string(secretKey[16:]), base64.StdEncoding.EncodeToString(secretKey)} {
		ctl := &secretGrep{texts: []string{text}, secrets: g.secrets}
		if len(ctl.leaks()) == 0 {
			t.Errorf("the grep misses %q", text)
		}
	}
	t.Logf("%d texts (errors, results, JSON, the process's stdout and stderr) hold none of %d secrets", len(g.texts), len(g.secrets))
}

// captureOutput sends the process's stdout and stderr (file descriptors 1
// and 2: Go and C alike, the modules included) to a file until the
// returned function restores them and returns what was written.
func captureOutput(t *testing.T) func() string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "output")
	require.NoError(t, err)
	os.Stdout.Sync()
	os.Stderr.Sync()
	saved := [2]int{}
	for i, fd := range []int{1, 2} {
		saved[i], err = unix.Dup(fd)
		require.NoError(t, err)
		require.NoError(t, unix.Dup2(int(f.Fd()), fd))
	}
	done := false
	restore := func() string {
		if done {
			return ""
		}
		done = true
		for i, fd := range []int{1, 2} {
			unix.Dup2(saved[i], fd)
			unix.Close(saved[i])
		}
		b, _ := os.ReadFile(f.Name())
		f.Close()
		if t.Failed() {
			// With -v, the test's own messages were streamed there.
			t.Logf("output while captured:\n%s", b)
		}
		return string(b)
	}
	t.Cleanup(func() { restore() })
	return restore
}

// TestNoSecretsInErrorsOrOutput runs p11derive through everything that
// makes errors — a wrong PIN, a PIN in a URI, every fault at every call of
// the strategies, corrupted results, a lost login whose C_Login fails —
// with a distinctive PIN and a base key of distinctive value, and greps
// every error, every result and profile as JSON, every record the Tokens'
// loggers wrote (Config.Logger at Debug, JSON and text), and all the
// process wrote to stdout and stderr meanwhile, for the PIN, the base key, DK (by
// the software reference) and what the encrypt-as-decrypt strategies put
// on the host (E_K(c_i), L = E_K(0)): in raw, hex (both cases) and base64.
func TestNoSecretsInErrorsOrOutput(t *testing.T) {
	ctx := context.Background()
	tokens(t) // the lab's tokens first, outside the capture
	nss, nssFwd := wrapped(t, fwd.Config{})
	l := lab.SoftHSM2(t)
	l.Setenv(t)
	w := fwd.Wrap(t, l, fwd.Config{})
	wrong := lab.SoftHSM2(t)

	iv := lab.Unhex("0f0e0d0c0b0a09080706050403020100")
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
	cbc := Encrypt{Cipher: AES, Mode: CBC, IV: iv}
	dk := refEncrypt(t, pkcs11.CKK_AES, secretKey, cbc, data)
	g := &secretGrep{secrets: map[string][]byte{"the PIN": []byte(secretPIN), "the base key": secretKey, "DK": dk}}
	blk := refBlock(t, pkcs11.CKK_AES, secretKey)
	for i := 0; i < 2; i++ {
		wi := make([]byte, 16)
		blk.Encrypt(wi, dk[16*i:16*(i+1)])
		g.secrets[fmt.Sprintf("w_%d = E_K(c_%d)", i+1, i+1)] = wi
	}
	l0 := make([]byte, 16)
	blk.Encrypt(l0, l0)
	g.secrets["L = E_K(0)"] = l0
	r := Request{Function: cbc, Data: data, KeyType: KeyAES256}

	// Every Token logs everything it logs, in both of slog's formats.
	var logJSON, logText lab.LockedBuffer
	jsonLog := slog.New(slog.NewJSONHandler(&logJSON, &slog.HandlerOptions{Level: slog.LevelDebug}))
	textLog := slog.New(slog.NewTextHandler(&logText, &slog.HandlerOptions{Level: slog.LevelDebug}))
	nss.tok.log = textLog

	stop := captureOutput(t)
	defer stop()

	// SoftHSM2, its PIN changed to the distinctive one.
	tok, err := Open(Config{Module: w.Module, Slot: &w.SlotID, PIN: l.PIN, Logger: jsonLog})
	require.NoError(t, err)
	require.NoError(t, withSession(tok, func(c *pkcs11.Ctx, s pkcs11.SessionHandle) error { return c.SetPIN(s, l.PIN, secretPIN) }))
	tok.Close()
	tok, err = Open(Config{Module: w.Module, Slot: &w.SlotID, PIN: secretPIN, Logger: jsonLog})
	require.NoError(t, err)
	defer tok.Close()
	hsm := &labToken{kind: "softhsm2+fwd", lab: w, tok: tok}
	base := hsm.importKey(t, pkcs11.CKK_AES, secretKey, pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_LABEL, "secret-base"))
	errs := 0

	// Every fault at every call of native, on SoftHSM2.
	faultAll := func(lt *labToken, w *lab.Token, base *Key, r Request) {
		fwd.Configure(t, w, fwd.Config{})
		res, err := lt.tok.Derive(ctx, base, r)
		require.NoError(t, err)
		g.result(res)
		require.NoError(t, lt.tok.Destroy(ctx, res.Key))
		counts := map[string]int{}
		for _, fn := range callsOf {
			counts[fn] = fwd.Calls(t, w, fn)
		}
		for _, fn := range callsOf {
			for n := 1; n <= counts[fn]; n++ {
				for _, ckr := range append(faultCKRs, pkcs11.CKR_PIN_EXPIRED, pkcs11.CKR_KEY_HANDLE_INVALID) {
					fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{{Func: fn, N: n, CKR: ckr}}})
					res, err := lt.tok.Derive(ctx, base, r)
					g.result(res)
					g.err(err)
					if err != nil {
						errs++
					} else {
						lt.tok.Destroy(ctx, res.Key)
					}
				}
				// And a token that returns wrong bits there.
				if fn == "C_GetAttributeValue" || fn == "C_DestroyObject" || fn == "C_SignInit" || fn == "C_EncryptInit" {
					continue
				}
				fwd.Configure(t, w, fwd.Config{Corrupt: []string{fmt.Sprintf("%s:%d", fn, n)}})
				res, err := lt.tok.Derive(ctx, base, r)
				g.result(res)
				g.err(err)
				if err == nil {
					lt.tok.Destroy(ctx, res.Key)
				}
			}
		}
		fwd.Configure(t, w, fwd.Config{})
	}
	faultAll(hsm, w, base, r)

	// The login lost, and restored with the PIN; then refused.
	require.NoError(t, testCtx(tok).CloseAllSessions(tok.SlotID()))
	_, err = tok.Derive(ctx, base, r)
	g.err(err)
	base, err = tok.FindKey(ctx, "secret-base")
	require.NoError(t, err)
	res, err := tok.Derive(ctx, base, r)
	require.NoError(t, err, "the login is restored with the distinctive PIN")
	g.result(res)
	require.NoError(t, testCtx(tok).CloseAllSessions(tok.SlotID()))
	fwd.Configure(t, w, fwd.Config{Faults: []fwd.Fault{{Func: "C_Login", N: 1, CKR: pkcs11.CKR_PIN_INCORRECT}}})
	for i := 0; i < 3; i++ {
		_, err = tok.Derive(ctx, base, r)
		g.err(err)
		_, err = tok.FindKey(ctx, "secret-base")
		g.err(err)
	}

	// A wrong PIN, and PINs in URIs.
	_, err = Open(Config{Module: wrong.Module, Slot: &wrong.SlotID, PIN: "wrong-" + secretPIN, Logger: textLog})
	require.Error(t, err)
	g.err(err)
	g.secrets["the wrong PIN"] = []byte("wrong-" + secretPIN)
	for _, uri := range []string{"pkcs11:token=x?pin-value=" + secretPIN, "pkcs11:token=x;pin-value=" + secretPIN,
		"pkcs11:token=x?pin-source=file:" + secretPIN, "pkcs11:token=x?pin-value=" + secretPIN + "%zz"} {
		_, err = Open(Config{Module: w.Module, URI: uri, Logger: jsonLog})
		require.Error(t, err)
		g.err(err)
	}

	// NSS softoken: mac-unwrap and cmac-unwrap, which put E_K(c_i) and L
	// on the host, faulted and corrupted at every call.
	nbase := nss.reKey(t, tokens(t)[1].importKey(t, pkcs11.CKK_AES, secretKey))
	for _, st := range []Strategy{MACUnwrap, CMACUnwrap, Native} {
		rs := r
		rs.Strategy = st
		faultAll(nss, nssFwd, nbase, rs)
	}
	// Bad input, with DK's value as the data: errors name lengths, never
	// bytes.
	for _, bad := range []Request{
		{Function: cbc, Data: dk[:17], KeyType: KeyAES128},
		{Function: cbc, Data: dk[:16], KeyType: KeyAES256},
		{Function: Encrypt{Cipher: DES3, Mode: ECB}, Data: dk, KeyType: KeyDES2},
		{Function: Decrypt{Cipher: AES, Mode: CBC, IV: dk[:8]}, Data: dk, KeyType: KeyAES128},
	} {
		_, err := nss.tok.Derive(ctx, nbase, bad)
		require.Error(t, err)
		g.err(err)
	}
	g.add("%s", stop())
	for _, logs := range []string{logJSON.String(), logText.String()} {
		// The control: the loggers did record derivations, failures and
		// logins.
		require.Contains(t, logs, "p11derive: derived")
		require.Contains(t, logs, "p11derive: derivation failed")
		require.Contains(t, logs, "p11derive: open failed")
		g.add("%s", logs)
	}
	require.Contains(t, logJSON.String(), "p11derive: logged in")
	require.NotZero(t, errs)
	t.Logf("%d errors from faults", errs)
	g.check(t)
}
