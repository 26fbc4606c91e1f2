// Command p11derive derives keys inside a PKCS#11 token: DK = E(data, K)
// from a base key K that never leaves the token, with DK left in the token.
//
// Usage:
//
//	p11derive derive  [token flags] --base LABEL --kdf aes-ecb --data HEX --key-type aes --len 16
//	p11derive batch   [token flags] --base LABEL --kdf aes-ecb --key-type aes --len 16 --input IN.csv --output OUT.csv [--wrap-key LABEL]
//	p11derive kcv     [token flags] --key LABEL | --id HEX [--json]
//	p11derive keygen  [token flags] --label LABEL [--id HEX] --key-type aes --len 32
//	p11derive keys    [token flags] [--key LABEL] [--id HEX] [--json]
//	p11derive destroy [token flags] --key LABEL | --id HEX --yes
//	p11derive scheme  <name> [token flags] --base LABEL [scheme flags]   (p11derive scheme -h)
//
// Token flags, with the environment variable each defaults to:
//
//	--module PATH      [P11DERIVE_MODULE] the PKCS#11 module
//	--init-args STR    [P11DERIVE_INIT_ARGS] C_Initialize arguments (NSS softoken)
//	--nss-db DIR       NSS softoken's database directory: p11derive builds its init arguments
//	--token LABEL | --slot ID | --uri pkcs11:...   which token
//	--pin-env NAME     environment variable holding the PIN (default P11DERIVE_PIN)
//	--pin-file PATH    file holding the PIN
//	--log-level LEVEL  debug, info, warn, error or off (default): log to stderr
//
// A key is selected by label and/or CKA_ID (--key/--id, --base/--base-id,
// --wrap-key/--wrap-key-id, or the URI's object= and id=). derive prints
// one JSON object on stdout (docs/json.md). Exit status: 0 done, 1 the
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
	"slices"
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
  keys     list the token's secret keys: label, ID, type, length, check value, attributes
  destroy  destroy one secret key (--yes)
  probe    report what the token can derive inside itself, verified
  scheme   derive the keys of a published scheme (EMV, GlobalPlatform SCP02/SCP03, AN10922, AES DUKPT, TR-31)
  version  print the version p11derive was built from (also --version)

Run 'p11derive help <command>' (or 'p11derive <command> -h') for the command's flags.

Keys are selected by label and/or CKA_ID: --key LABEL / --id HEX (kcv, keys,
destroy, probe), --base / --base-id, --wrap-key / --wrap-key-id; the key of
--key or --base may come from --uri's object= and id= instead. JSON output:
docs/json.md.

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
		"probe": cmdProbe, "scheme": cmdScheme, "version": cmdVersion, "keys": cmdKeys, "destroy": cmdDestroy,
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

func cmdDerive(args []string, stdout io.Writer) error {
	c, err := parseDerive(args)
	if err != nil {
		return err
	}
	r, ff, km := c.r, &c.ff, c.km
	tok, err := c.tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	k, err := findKey(ctx, tok, c.baseSel)
	if err != nil {
		return err
	}
	var old []*derive.Key
	if r.Persistent {
		// The label is refused if a key has it (labelsTaken says how to
		// replace it), or with --replace, the one key that has it is kept
		// until its successor exists.
		if old, err = labelsTaken(ctx, tok, []string{r.Label}, c.replace, true); err != nil {
			return err
		}
		for _, o := range old {
			if o.Handle == k.Handle {
				return fmt.Errorf("p11derive: --replace would destroy the base key %q", o.Label)
			}
		}
	}
	res, err := tok.Derive(ctx, k, r)
	if err != nil {
		return err // the old key, if any, is untouched
	}
	if r.Persistent {
		if err := ownLabel(ctx, tok, res.Key, old...); err != nil {
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
	j.Warnings = append(res.Warnings, derive.BaseKeyWarnings(k)...)
	doc := keyDoc{SchemaVersion: schemaVersion, keyJSON: j,
		derivationJSON: derivationJSON{KDF: res.Function.Name(), Strategy: string(res.Strategy), Calls: res.Calls}}
	if err := reported(ctx, tok, printJSON(stdout, doc), res.Key); err != nil {
		return err // the old key, if any, stays
	}
	// The old key goes only now that its successor exists.
	return destroyReplaced(ctx, tok, old, res.Key)
}

// deriveCmd is the command line of 'derive', parsed and checked.
type deriveCmd struct {
	tf      tokenFlags
	ff      funcFlags
	baseSel derive.Selector
	r       derive.Request
	km      derive.KCVMethod
	replace bool
}

func parseDerive(args []string) (*deriveCmd, error) {
	c := &deriveCmd{}
	fs := flag.NewFlagSet("derive", flag.ContinueOnError)
	c.tf.register(fs)
	ff := &c.ff
	ff.register(fs)
	dataHex := fs.String("data", "", "derivation data, `hex`")
	label := fs.String("label", "", "DK's CKA_LABEL")
	idHex := fs.String("id", "", "DK's CKA_ID, `hex`")
	tokenObject := fs.Bool("token-object", false, "make DK a token object (persistent) rather than a session object; a label that a secret key has already is refused")
	fs.BoolVar(&c.replace, "replace", false, "with --token-object: replace the secret key labelled --label, destroyed once DK exists (kept if DK cannot be made)")
	info := fs.String("info", "", "HKDF info, `hex` (the derivation data of hkdf; same as --data)")
	kcvMethod := kcvFlag(fs)
	if err := parse(fs, args); err != nil {
		return nil, err
	}
	var err error
	if c.km, err = parseKCV(*kcvMethod); err != nil {
		return nil, err
	}
	if *info != "" {
		if *dataHex != "" {
			return nil, usageError{errors.New("--info and --data are the same thing for hkdf: give one")}
		}
		*dataHex = *info
	}
	uriKey, err := c.tf.uriKey()
	if err != nil {
		return nil, err
	}
	c.baseSel, err = ff.base.required(uriKey)
	if err != nil {
		return nil, err
	}
	if err := required("data", *dataHex); err != nil {
		return nil, err
	}
	data, err := hexFlag("data", *dataHex)
	if err != nil {
		return nil, err
	}
	spec, err := ff.spec()
	if err != nil {
		return nil, err
	}
	c.r = spec.request(data)
	c.r.Label, c.r.Persistent = *label, *tokenObject
	if *idHex != "" {
		if c.r.ID, err = hexFlag("id", *idHex); err != nil {
			return nil, err
		}
	}
	if *tokenObject && *label == "" {
		return nil, usageError{errors.New("--token-object needs --label, or the key could never be found again")}
	}
	if c.replace && !*tokenObject {
		return nil, usageError{errors.New("--replace needs --token-object: a session key replaces nothing")}
	}
	return c, nil
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
// meanwhile (another process), but the keys k replaces; if one did, k is
// destroyed.
func ownLabel(ctx context.Context, tok *derive.Token, k *derive.Key, replaced ...*derive.Key) error {
	hs, err := tok.Handles(ctx, derive.Selector{Label: k.Label}, 2+len(replaced))
	if err == nil {
		mine, others := false, 0
		for _, h := range hs {
			switch {
			case h == k.Handle:
				mine = true
			case !slices.ContainsFunc(replaced, func(o *derive.Key) bool { return o.Handle == h }):
				others++
			}
		}
		if !mine || others > 0 {
			err = fmt.Errorf("p11derive: another key was labelled %q meanwhile: the new key is destroyed", k.Label)
		}
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

// destroyReplaced destroys the keys --replace replaced, once their
// successors (made) exist. A token may have made the new key by
// overwriting the old object (NSS softoken's key database does, for a key
// of the same class, type, label and CKA_ID): that object, which is the
// new key, stays.
func destroyReplaced(ctx context.Context, tok *derive.Token, old []*derive.Key, made ...*derive.Key) error {
	for _, o := range old {
		same := false
		for _, m := range made {
			same = same || m.Handle == o.Handle
		}
		if same {
			continue
		}
		if err := tok.Destroy(context.WithoutCancel(ctx), o); err != nil {
			return fmt.Errorf("p11derive: the new key exists, but the key it replaces (%s) could not be destroyed: %w", derive.Selector{Label: o.Label, ID: o.ID}, err)
		}
	}
	return nil
}

func cmdKCV(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("kcv", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	var kf keyFlags
	kf.register(fs, "key", "id", "the key")
	kcvMethod := fs.String("kcv", "ecb", "check value convention: ecb (E_K(0), the default), cmac (CMAC_K(0)) or attribute (the token's CKA_CHECK_VALUE, unverified)")
	asJSON := fs.Bool("json", false, "print the key as one JSON object (docs/json.md) rather than the bare check value")
	if err := parse(fs, args); err != nil {
		return err
	}
	uriKey, err := tf.uriKey()
	if err != nil {
		return err
	}
	sel, err := kf.required(uriKey)
	if err != nil {
		return err
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
	k, err := findKey(ctx, tok, sel)
	if err != nil {
		return err
	}
	kcv, err := tok.CheckValueBy(ctx, k, km)
	if err != nil {
		return err
	}
	if *asJSON {
		j := keyOf(k)
		j.setKCV(kcv)
		return printJSON(stdout, keyDoc{SchemaVersion: schemaVersion, keyJSON: j})
	}
	fmt.Fprintln(stdout, hex.EncodeToString(kcv.Value))
	return nil
}

func cmdKeygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	label := fs.String("label", "", "the new key's CKA_LABEL")
	idHex := fs.String("id", "", "the new key's CKA_ID, `hex`")
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
	var id []byte
	if *idHex != "" {
		var err error
		if id, err = hexFlag("id", *idHex); err != nil {
			return err
		}
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
	k, err := tok.Generate(ctx, derive.KeySpec{Label: *label, ID: id, Type: kt, Usage: u, Persistent: !*session, StrictAttributes: *strict})
	if err != nil {
		return err
	}
	if !*session {
		if err := ownLabel(ctx, tok, k); err != nil {
			return err
		}
	}
	return reported(ctx, tok, printJSON(stdout, keyDoc{SchemaVersion: schemaVersion, keyJSON: describe(ctx, tok, k)}), k)
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
