// Command p11derive derives keys inside a PKCS#11 token: DK = E(data, K)
// from a base key K that never leaves the token, with DK left in the token.
//
// Usage:
//
//	p11derive derive  [token flags] --base LABEL --kdf aes-ecb --data HEX --key-type aes --len 16
//	p11derive batch   [token flags] --base LABEL --kdf aes-ecb --key-type aes --len 16 --input IN.csv --output OUT.csv [--wrap-key LABEL]
//	p11derive kcv     [token flags] --key LABEL
//	p11derive keygen  [token flags] --label LABEL --key-type aes --len 32
//	p11derive scheme  <name> [token flags] --base LABEL [scheme flags]   (p11derive scheme -h)
//
// Token flags, with the environment variable each defaults to:
//
//	--module PATH      [P11DERIVE_MODULE] the PKCS#11 module
//	--init-args STR    [P11DERIVE_INIT_ARGS] C_Initialize arguments (NSS softoken)
//	--token LABEL | --slot ID | --uri pkcs11:...   which token
//	--pin-env NAME     environment variable holding the PIN (default P11DERIVE_PIN)
//	--pin-file PATH    file holding the PIN
//
// derive prints one JSON object on stdout. Exit status: 0 done, 1 the
// token or the data said no, 2 a usage error, 130 SIGINT; 3–125 are left
// for command-specific outcomes. Every failure is one line on stderr,
// "p11derive CMD: ...". The PIN is never printed.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/p11derive/p11derive/derive"
)

const usage = `usage: p11derive <command> [flags]

commands:
  derive   derive DK = E(data, K) inside the token and print it as JSON
  batch    derive a key per row of a CSV file; keep them in the token or wrap them out
  kcv      print a key's check value, computed inside the token
  keygen   generate a base key inside the token
  probe    report what the token can derive inside itself, verified
  scheme   derive the keys of a published scheme (EMV, GlobalPlatform SCP02/SCP03, AN10922, AES DUKPT, TR-31)
  version  print the version p11derive was built from (also --version)

Run 'p11derive help <command>' (or 'p11derive <command> -h') for the command's flags.

Exit status: 0 done; 1 the token or the data said no; 2 a usage error (a bad
or missing flag, bad input found before any token call); 3 the probe report
is incomplete; 130 interrupted (SIGINT). Other codes are reserved. Every
failure is one line on stderr, starting "p11derive <command>: ".
`

// Exit statuses. 4 to 125 are left for other command-specific outcomes;
// 126 and up are the shell's.
const (
	exitOK      = 0
	exitFailure = 1 // the token or the data said no
	exitUsage   = 2 // bad command line, or input refused before any token call
	// exitIncomplete is for a probe report that is incomplete (the module
	// or a session failed: the report, printed all the same, does not say
	// what the token can do).
	exitIncomplete  = 3
	exitInterrupted = 130 // SIGINT: 128 + 2, as shells report it
)

// exitError is a failure with its own exit status.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

// diag is where commands write warnings: run's stderr.
var diag io.Writer = os.Stderr

// helpOut is where -h and help print: run's stdout.
var helpOut io.Writer = os.Stdout

// warn writes one warning line on stderr.
func warn(cmd, msg string) {
	fmt.Fprintf(diag, "p11derive %s: warning: %s\n", cmd, strings.TrimPrefix(msg, "p11derive: "))
}

// commands are the subcommands by name.
var commands map[string]func([]string, io.Writer) error

func init() {
	commands = map[string]func([]string, io.Writer) error{
		"derive": cmdDerive, "batch": cmdBatch, "kcv": cmdKCV, "keygen": cmdKeygen,
		"probe": cmdProbe, "scheme": cmdScheme, "version": cmdVersion,
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	diag, helpOut, loginHint = stderr, stdout, ""
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "help":
		if len(args) == 1 {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		if _, ok := commands[args[1]]; !ok {
			fmt.Fprintf(stderr, "p11derive: help: unknown command %q (commands: %s)\n", args[1], commandNames())
			return exitUsage
		}
		name, args = args[1], []string{args[1], "-h"}
	case "--version", "-version":
		fmt.Fprintln(stdout, currentVersion())
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "p11derive: unknown command %q (commands: %s; run 'p11derive help')\n", name, commandNames())
		return exitUsage
	}
	err := cmd(args[1:], stdout)
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	msg := oneLine(name, err)
	if loginHint != "" && errors.Is(err, derive.ErrNotFound) {
		msg += " (" + loginHint + ")"
	}
	fmt.Fprintln(stderr, msg)
	return exitCode(err)
}

// exitCode is the exit status for a command's error: 130 after SIGINT,
// an exitError's own code, 2 for a bad command line or input refused before any token call
// (derive.ErrInvalidInput), else 1.
func exitCode(err error) int {
	var ue usageError
	var ee exitError
	switch {
	case interrupted.Load() || errors.Is(err, errInterrupted):
		return exitInterrupted
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue), errors.Is(err, derive.ErrInvalidInput):
		return exitUsage
	}
	return exitFailure
}

func commandNames() string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// required reports the first of the flags, given as name, value pairs in
// the order of the usage text, whose value is empty: always the same one.
func required(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return usageError{fmt.Errorf("--%s is required", pairs[i])}
		}
	}
	return nil
}

// usageError is a bad command line.
type usageError struct{ error }

// oneLine is err as one line with one prefix, "p11derive CMD: ": the
// prefixes of wrapped errors are dropped.
func oneLine(cmd string, err error) string {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	msg = strings.ReplaceAll(msg, ": p11derive: ", ": ")
	for strings.HasPrefix(msg, "p11derive: ") {
		msg = strings.TrimPrefix(msg, "p11derive: ")
	}
	return "p11derive " + cmd + ": " + msg
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if text, ok := usageTexts[fs.Name()]; ok {
		fs.Usage = func() { fmt.Fprint(fs.Output(), text); fs.PrintDefaults() }
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(helpOut)
			fs.Usage()
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	return nil
}

func hexFlag(name, v string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(v, " ", ""))
	if err != nil {
		return nil, usageError{fmt.Errorf("--%s: not hex: %v", name, err)}
	}
	return b, nil
}

// keyJSON is how the command prints a key. It holds no key material: the
// check value is E_key(0^n)'s first 3 bytes, computed in the token.
type keyJSON struct {
	Label   string `json:"label"`
	Handle  uint   `json:"handle"`
	KeyType string `json:"key_type"`
	Len     int    `json:"len"`
	KCV     string `json:"kcv,omitempty"`
	// KCVMethod is the check value's convention: "ecb", "cmac", or "none"
	// when the key has none (KCVUnavailable says why, unless none was
	// asked for); KCVSource says how it was had ("computed", "computed on
	// a session copy", "CKA_CHECK_VALUE").
	KCVMethod      string `json:"kcv_method"`
	KCVSource      string `json:"kcv_source,omitempty"`
	KCVUnavailable string `json:"kcv_unavailable,omitempty"`
	Sensitive      bool   `json:"sensitive"`
	Extractable    bool   `json:"extractable"`
	// AlwaysSensitive and NeverExtractable are false for a key the token
	// made readable or extractable and p11derive tightened (warnings say so).
	AlwaysSensitive  bool     `json:"always_sensitive"`
	NeverExtractable bool     `json:"never_extractable"`
	Token            bool     `json:"token_object"`
	Usages           []string `json:"usages"`
	KDF              string   `json:"kdf,omitempty"`
	Strategy         string   `json:"strategy,omitempty"`
	Calls            int      `json:"calls,omitempty"`
	Warnings         []string `json:"warnings,omitempty"`
}

// describe is k as JSON, with its check value by the default convention
// (ecb).
func describe(ctx context.Context, tok *derive.Token, k *derive.Key) keyJSON {
	return describeKCV(ctx, tok, k, derive.KCVECB)
}

// describeKCV is k as JSON with its check value by method m. A key with no
// check value by m (a key type without the convention, a token refusing
// the session copy a key without the usage needs) says so, by
// kcv_method "none" and the reason.
func describeKCV(ctx context.Context, tok *derive.Token, k *derive.Key, m derive.KCVMethod) keyJSON {
	j := keyJSON{Label: k.Label, Handle: uint(k.Handle), KeyType: derive.KeyTypeName(k.Type), Len: k.Len,
		Sensitive: k.Sensitive, Extractable: k.Extractable, AlwaysSensitive: k.AlwaysSensitive,
		NeverExtractable: k.NeverExtractable, Token: k.Token, Usages: usages(k), Warnings: k.Warnings, KCVMethod: string(derive.KCVNone)}
	if m == derive.KCVNone {
		return j
	}
	kcv, err := tok.CheckValueBy(ctx, k, m)
	if err != nil {
		j.KCVUnavailable = err.Error()
		return j
	}
	j.KCV, j.KCVMethod, j.KCVSource = hex.EncodeToString(kcv.Value), string(kcv.Method), kcv.Source
	return j
}

// kcvFlag registers --kcv.
func kcvFlag(fs *flag.FlagSet) *string {
	return fs.String("kcv", "ecb", "check value convention: ecb (E_K(0), the default), cmac (CMAC_K(0), X9.24-1:2017/TR-31 for AES keys), attribute (ecb read from the token's CKA_CHECK_VALUE, unverified) or none")
}

func parseKCV(s string) (derive.KCVMethod, error) {
	m, err := derive.ParseKCVMethod(strings.ToLower(s))
	if err != nil {
		return "", usageError{fmt.Errorf("--kcv: %q is not ecb, cmac, attribute or none", s)}
	}
	return m, nil
}

// schemaVersion is the version of the command's JSON documents (see
// docs/json.md): it changes when a field changes meaning or goes away.
const schemaVersion = 1

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdDerive(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("derive", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	var ff funcFlags
	ff.register(fs)
	dataHex := fs.String("data", "", "derivation data, `hex`")
	label := fs.String("label", "", "DK's CKA_LABEL")
	tokenObject := fs.Bool("token-object", false, "make DK a token object (persistent) rather than a session object")
	info := fs.String("info", "", "HKDF info, `hex` (the derivation data of hkdf; same as --data)")
	kcvMethod := kcvFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	km, err := parseKCV(*kcvMethod)
	if err != nil {
		return err
	}
	if *info != "" {
		if *dataHex != "" {
			return usageError{errors.New("--info and --data are the same thing for hkdf: give one")}
		}
		*dataHex = *info
	}
	if err := required("base", ff.base, "data", *dataHex); err != nil {
		return err
	}
	data, err := hexFlag("data", *dataHex)
	if err != nil {
		return err
	}
	spec, err := ff.spec()
	if err != nil {
		return err
	}
	r := spec.request(data)
	r.Label, r.Persistent = *label, *tokenObject
	if *tokenObject && *label == "" {
		return usageError{errors.New("--token-object needs --label, or the key could never be found again")}
	}
	tok, err := tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	k, err := tok.FindKey(ctx, ff.base)
	if err != nil {
		return err
	}
	if r.Persistent {
		if err := labelFree(ctx, tok, r.Label); err != nil {
			return err
		}
	}
	res, err := tok.Derive(ctx, k, r)
	if err != nil {
		return err
	}
	if r.Persistent {
		if err := ownLabel(ctx, tok, res.Key); err != nil {
			return err
		}
	}
	if ff.profileOut != "" {
		b, err := json.MarshalIndent(res.Profile(), "", "  ")
		if err == nil {
			err = os.WriteFile(ff.profileOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			tok.Destroy(ctx, res.Key)
			return fmt.Errorf("p11derive: writing the profile: %w", err)
		}
	}
	j := describeKCV(ctx, tok, res.Key, km)
	j.KDF = res.Function.Name()
	j.Strategy = string(res.Strategy)
	j.Calls = res.Calls
	j.Warnings = append(res.Warnings, derive.BaseKeyWarnings(k)...)
	return reported(ctx, tok, printJSON(stdout, j), res.Key)
}

// labelFree refuses a label that a secret key of the token has already: a
// persistent key never shares its label, which names it for every later
// command.
func labelFree(ctx context.Context, tok *derive.Token, label string) error {
	hs, err := tok.Handles(ctx, derive.Selector{Label: label}, 1)
	if err != nil {
		return err
	}
	if len(hs) > 0 {
		return fmt.Errorf("p11derive: a secret key labelled %q exists already: choose another --label", label)
	}
	return nil
}

// ownLabel checks, after making k, that no other key took its label
// meanwhile (another process); if one did, k is destroyed.
func ownLabel(ctx context.Context, tok *derive.Token, k *derive.Key) error {
	hs, err := tok.Handles(ctx, derive.Selector{Label: k.Label}, 2)
	if err == nil && (len(hs) != 1 || hs[0] != k.Handle) {
		err = fmt.Errorf("p11derive: another key was labelled %q meanwhile: the new key is destroyed", k.Label)
	}
	if err != nil {
		tok.Destroy(context.WithoutCancel(ctx), k)
	}
	return err
}

// reported destroys the persistent keys made when err, the result of
// reporting them, is not nil: a key nobody was told of is not left behind.
func reported(ctx context.Context, tok *derive.Token, err error, keys ...*derive.Key) error {
	if err == nil {
		return nil
	}
	for _, k := range keys {
		if k.Token {
			tok.Destroy(context.WithoutCancel(ctx), k)
		}
	}
	return fmt.Errorf("p11derive: reporting the new key failed, so it was destroyed: %w", err)
}

func cmdKCV(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("kcv", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	label := fs.String("key", "", "CKA_LABEL of the key")
	kcvMethod := fs.String("kcv", "ecb", "check value convention: ecb (E_K(0), the default) or cmac (CMAC_K(0))")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *label == "" {
		return usageError{errors.New("--key is required")}
	}
	km, err := parseKCV(*kcvMethod)
	if err != nil {
		return err
	}
	if km == derive.KCVNone {
		return usageError{errors.New("--kcv none: the kcv command prints a check value")}
	}
	tok, err := tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	k, err := tok.FindKey(ctx, *label)
	if err != nil {
		return err
	}
	kcv, err := tok.CheckValueBy(ctx, k, km)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, hex.EncodeToString(kcv.Value))
	return nil
}

func cmdKeygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	label := fs.String("label", "", "the new key's CKA_LABEL")
	keyType := fs.String("key-type", "aes", "aes, des, des2, des3, generic")
	n := fs.Int("len", 0, "length in `bytes` (aes: 16, 24, 32)")
	use := fs.String("usage", "derive", "comma-separated uses: derive, encrypt, decrypt, sign, verify, wrap, unwrap\n(a base key needs derive, or sign,unwrap for mac-unwrap; encrypt with either lets C_Encrypt compute DK in the clear)")
	session := fs.Bool("session", false, "make a session object (gone when the command exits; for tests)")
	strict := fs.Bool("strict-attributes", false, "refuse a key the token made readable or extractable against the template, rather than tightening it (C_SetAttributeValue) with a warning")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *label == "" {
		return usageError{errors.New("--label is required")}
	}
	kt, err := derive.ParseKeyType(*keyType, *n)
	if err != nil {
		return usageError{err}
	}
	u, err := parseUsage(*use)
	if err != nil {
		return err
	}
	if u == 0 {
		return usageError{errors.New("--usage: a key with no usage is of no use")}
	}
	if u&derive.UseEncrypt != 0 && u&(derive.UseDerive|derive.UseUnwrap) != 0 {
		warn("keygen", "--usage gives the key CKA_ENCRYPT as well as CKA_DERIVE or CKA_UNWRAP: C_Encrypt of any derivation data then computes that DK on the host, in the clear (see SECURITY.md)")
	}
	tok, err := tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	if err := labelFree(ctx, tok, *label); err != nil {
		return err
	}
	k, err := tok.Generate(ctx, derive.KeySpec{Label: *label, Type: kt, Usage: u, Persistent: !*session, StrictAttributes: *strict})
	if err != nil {
		return err
	}
	if !*session {
		if err := ownLabel(ctx, tok, k); err != nil {
			return err
		}
	}
	return reported(ctx, tok, printJSON(stdout, describe(ctx, tok, k)), k)
}

// usages are the key's CKA_DERIVE, CKA_ENCRYPT… that are true, as --usage
// names them.
func usages(k *derive.Key) []string {
	u := []string{}
	for _, x := range []struct {
		on   bool
		name string
	}{{k.Derive, "derive"}, {k.Encrypt, "encrypt"}, {k.Decrypt, "decrypt"}, {k.Sign, "sign"}, {k.Verify, "verify"}, {k.Wrap, "wrap"}, {k.Unwrap, "unwrap"}} {
		if x.on {
			u = append(u, x.name)
		}
	}
	return u
}

func parseUsage(s string) (derive.Usage, error) {
	var u derive.Usage
	for _, w := range strings.Split(s, ",") {
		switch strings.TrimSpace(w) {
		case "derive":
			u |= derive.UseDerive
		case "encrypt":
			u |= derive.UseEncrypt
		case "decrypt":
			u |= derive.UseDecrypt
		case "sign":
			u |= derive.UseSign
		case "verify":
			u |= derive.UseVerify
		case "wrap":
			u |= derive.UseWrap
		case "unwrap":
			u |= derive.UseUnwrap
		case "":
		default:
			return 0, usageError{fmt.Errorf("--usage: unknown use %q", w)}
		}
	}
	return u, nil
}
