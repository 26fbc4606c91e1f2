package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/miekg/pkcs11"
	"golang.org/x/term"

	"github.com/p11derive/p11derive/derive"
)

// tokenFlags are the flags every command takes to reach its token.
type tokenFlags struct {
	module, initArgs string
	nssDB            string // --nss-db: NSS softoken's database directory
	logLevel         string
	label, uri       string
	uris             []string // every --uri given: several for a batch over a group
	slot             int
	pinEnv, pinFile  string
	pinPrompt        bool

	fs *flag.FlagSet // to tell flags given from defaults
}

// defaultPINEnv is the variable the PIN is read from when no PIN flag is
// given.
const defaultPINEnv = "P11DERIVE_PIN"

func (f *tokenFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.module, "module", os.Getenv("P11DERIVE_MODULE"), "PKCS#11 module `path` [P11DERIVE_MODULE]")
	fs.StringVar(&f.initArgs, "init-args", os.Getenv("P11DERIVE_INIT_ARGS"), "C_Initialize pReserved `string`, e.g. for NSS softoken [P11DERIVE_INIT_ARGS]")
	fs.StringVar(&f.nssDB, "nss-db", "", "NSS softoken database `directory` (certutil -N -d sql:DIR): p11derive builds the init args NSS needs (instead of --init-args)")
	fs.StringVar(&f.logLevel, "log-level", "off", "log what p11derive does to stderr at `level` debug, info, warn, error or off (never a PIN or key material)")
	fs.StringVar(&f.label, "token", "", "token `label`")
	fs.IntVar(&f.slot, "slot", -1, "slot `ID`")
	fs.Func("uri", "RFC 7512 PKCS#11 `URI` selecting the token (batch in wrap mode: repeat it for several tokens holding the same base key)", func(v string) error {
		f.uris = append(f.uris, v)
		f.uri = f.uris[0]
		return nil
	})
	fs.StringVar(&f.pinEnv, "pin-env", defaultPINEnv, "environment `variable` holding the user PIN (an unset default means no PIN)")
	fs.StringVar(&f.pinFile, "pin-file", "", "`file` holding the user PIN (its first line)")
	fs.BoolVar(&f.pinPrompt, "pin-prompt", false, "ask for the user PIN on the terminal, without echo (stdin must be a terminal)")
}

// given reports whether the flag name was on the command line.
func (f *tokenFlags) given(name string) bool {
	found := false
	if f.fs != nil {
		f.fs.Visit(func(fl *flag.Flag) { found = found || fl.Name == name })
	}
	return found
}

// pinSource is where the PIN came from, or was looked for: for messages.
type pinSource struct {
	pin  string
	from string // "the environment variable P11DERIVE_PIN", "the file pin.txt", "the terminal"
}

// readPIN reads the PIN from the one source the flags name: --pin-file,
// --pin-prompt, --pin-env, or by default P11DERIVE_PIN, whose absence
// means no PIN. A source named on the command line that holds nothing is a
// usage error; nothing here reaches the token.
func (f *tokenFlags) readPIN() (pinSource, error) {
	envGiven := f.given("pin-env") && f.pinEnv != ""
	n := 0
	for _, b := range []bool{envGiven, f.pinFile != "", f.pinPrompt} {
		if b {
			n++
		}
	}
	if n > 1 {
		return pinSource{}, usageError{errors.New("give one PIN source: --pin-env, --pin-file or --pin-prompt")}
	}
	switch {
	case f.pinFile != "":
		src := pinSource{from: "the file " + f.pinFile}
		b, err := os.ReadFile(f.pinFile)
		if err != nil {
			// The path is not secret; the content is never shown.
			return src, usageError{fmt.Errorf("--pin-file: cannot read the PIN file: %w", err)}
		}
		pin, _, _ := strings.Cut(string(b), "\n")
		src.pin = strings.TrimRight(pin, "\r")
		clear(b)
		if src.pin == "" {
			return src, usageError{fmt.Errorf("--pin-file: the PIN file %s is empty", f.pinFile)}
		}
		return src, nil
	case f.pinPrompt:
		return promptPIN(os.Stdin, diag)
	case envGiven:
		src := pinSource{from: "the environment variable " + f.pinEnv}
		v, ok := os.LookupEnv(f.pinEnv)
		switch {
		case !ok:
			return src, usageError{fmt.Errorf("--pin-env: the environment variable %s is not set", f.pinEnv)}
		case v == "":
			return src, usageError{fmt.Errorf("--pin-env: the environment variable %s is empty", f.pinEnv)}
		}
		src.pin = v
		return src, nil
	case f.given("pin-env"): // --pin-env "": no PIN, deliberately
		return pinSource{from: "no PIN source (--pin-env \"\")"}, nil
	}
	return pinSource{pin: os.Getenv(defaultPINEnv), from: "the environment variable " + defaultPINEnv}, nil
}

// promptPIN asks for the PIN on the terminal that stdin is, with echo off.
func promptPIN(stdin *os.File, prompt io.Writer) (pinSource, error) {
	src := pinSource{from: "the terminal"}
	fd := int(stdin.Fd())
	if !term.IsTerminal(fd) {
		return src, usageError{errors.New("--pin-prompt: stdin is not a terminal (use --pin-env or --pin-file)")}
	}
	if st, err := term.GetState(fd); err == nil {
		setOnInterrupt(func() { term.Restore(fd, st); fmt.Fprintln(prompt) })
		defer setOnInterrupt(nil)
	}
	fmt.Fprint(prompt, "p11derive: user PIN: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(prompt)
	if err != nil {
		return src, fmt.Errorf("p11derive: --pin-prompt: reading the PIN: %w", err)
	}
	src.pin = string(b)
	clear(b)
	if src.pin == "" {
		return src, usageError{errors.New("--pin-prompt: no PIN typed")}
	}
	return src, nil
}

// loginHint, when set, is why a key may not be visible: the token was
// opened without a PIN although its flags say it needs a login. run adds
// it to a not-found error.
var loginHint string

func (f *tokenFlags) open() (*derive.Token, error) { return f.openWith(false) }

// openWith opens the token, with read-only sessions if readOnly. Without a
// PIN, a token whose flags say CKF_LOGIN_REQUIRED is refused with an error
// naming where the PIN was looked for, except read-only (the probe, which
// needs no login for session objects where the token allows it).
func (f *tokenFlags) openWith(readOnly bool) (*derive.Token, error) {
	if len(f.uris) > 1 {
		return nil, usageError{fmt.Errorf("--uri given %d times: only batch, in wrap mode, takes several tokens", len(f.uris))}
	}
	toks, err := f.openAll(readOnly, []string{f.uri})
	if err != nil {
		return nil, err
	}
	return toks[0], nil
}

// openAll opens the token of each URI ("" for the one the other flags
// select) with the same module, init args and PIN, read once: the tokens
// of a batch over a group. On error, none is left open.
func (f *tokenFlags) openAll(readOnly bool, uris []string) (_ []*derive.Token, err error) {
	logger, err := newLogger(f.logLevel, diag)
	if err != nil {
		return nil, err
	}
	initArgs := f.initArgs
	if f.nssDB != "" {
		if f.given("init-args") {
			return nil, usageError{errors.New("give --nss-db or --init-args, not both")}
		}
		if initArgs, err = nssInitArgs(f.nssDB); err != nil {
			return nil, err
		}
	}
	cfg := derive.Config{Module: f.module, InitArgs: initArgs, Label: f.label, ReadOnly: readOnly, Logger: logger}
	if f.slot >= 0 {
		slot := uint(f.slot)
		cfg.Slot = &slot
	}
	src, err := f.readPIN()
	if err != nil {
		return nil, err
	}
	cfg.PIN = src.pin
	var toks []*derive.Token
	defer func() {
		if err != nil {
			for _, t := range toks {
				t.Close()
			}
		}
	}()
	for _, uri := range uris {
		cfg.URI = uri
		tok, err := derive.Open(cfg)
		if err != nil {
			return nil, err
		}
		toks = append(toks, tok)
		if src.pin == "" && tok.Info().Flags&pkcs11.CKF_LOGIN_REQUIRED != 0 {
			msg := fmt.Sprintf("token %q requires a login (CKF_LOGIN_REQUIRED) and no PIN was given: %s is not set; give the PIN there, or with --pin-env NAME, --pin-file PATH or --pin-prompt",
				strings.TrimSpace(tok.Info().Label), src.from)
			if !readOnly {
				return nil, usageError{errors.New(msg)}
			}
			loginHint = msg
		}
	}
	return toks, nil
}

// nssInitArgs is the C_Initialize pReserved string NSS softoken needs for
// the database in dir (made by certutil -N -d sql:DIR): the string
// internal/lab gives its NSS tokens. flags must stay empty: readOnly makes
// the key-database slot refuse token objects, noCertDB leaves it without
// its database.
func nssInitArgs(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", usageError{fmt.Errorf("--nss-db: %w", err)}
	}
	st, err := os.Stat(abs)
	switch {
	case err != nil:
		return "", usageError{fmt.Errorf("--nss-db: %w", err)}
	case !st.IsDir():
		return "", usageError{fmt.Errorf("--nss-db: %s is not a directory", dir)}
	case strings.ContainsRune(abs, '\''):
		return "", usageError{fmt.Errorf("--nss-db: NSS init args cannot carry a path with a quote: %s", dir)}
	}
	if _, err := os.Stat(filepath.Join(abs, "key4.db")); err != nil {
		return "", usageError{fmt.Errorf("--nss-db: %s holds no NSS database (key4.db); make one with: certutil -N -d sql:%s --empty-password", dir, dir)}
	}
	return fmt.Sprintf("configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' flags=", abs), nil
}

// newLogger is the logger of --log-level: nil for off (derive then logs
// nothing), else slog's text format on w.
func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	switch level {
	case "off", "":
		return nil, nil
	case "debug":
		l = slog.LevelDebug
	case "info":
		l = slog.LevelInfo
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		return nil, usageError{fmt.Errorf("--log-level: %q is none of debug, info, warn, error, off", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
