package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/probe"
)

// cmdProbe reports what the token can derive inside itself: the
// mechanisms that matter, and for every function and strategy whether it
// ran and gave the right key. The report is made whatever the token
// supports; only a token that cannot be reached is an error, and a report
// that module or session failures left incomplete exits with status 3.
func cmdProbe(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	asJSON := fs.Bool("json", false, "print the report as JSON (schema_version 2)")
	asMarkdown := fs.Bool("markdown", false, "print the report as a Markdown page")
	var kf keyFlags
	kf.register(fs, "key", "id", "an existing base key: also say what it can use (its attributes are only read)")
	kdfs := fs.String("kdf", "", "probe only these `functions`, comma-separated (default all): "+strings.Join(derive.FunctionNames(), ", "))
	runs := fs.Int("runs", 3, "derivations timed per function and strategy (the median is reported)")
	listOnly := fs.Bool("list-only", false, "run nothing and make no object: judge from the mechanism list alone")
	noImport := fs.Bool("no-import", false, "never import test keys of known value: generate them in the token and cross-check the strategies")
	rw := fs.Bool("rw", false, "when the token refuses a test key in a read-only session (CKR_SESSION_READ_ONLY), make it in a read-write session (the report says which)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *asJSON && *asMarkdown {
		return usageError{errors.New("--json and --markdown: give one")}
	}
	if *runs < 1 {
		return usageError{errors.New("--runs must be at least 1")}
	}
	uriKey, err := tf.uriKey()
	if err != nil {
		return err
	}
	sel, err := kf.selector(uriKey)
	if err != nil {
		return err
	}
	opts := probe.Options{Runs: *runs, KeyLabel: sel.Label, KeyID: sel.ID, ListOnly: *listOnly, NoImport: *noImport}
	if *rw {
		opts.ReadWrite = func() (*derive.Token, error) { return tf.openWith(false) }
	}
	known := map[string]bool{}
	for _, n := range derive.FunctionNames() {
		known[n] = true
	}
	for _, k := range strings.Split(*kdfs, ",") {
		if k = strings.ToLower(strings.TrimSpace(k)); k != "" {
			if !known[k] {
				return usageError{fmt.Errorf("--kdf: unknown function %q (known: %s)", k, strings.Join(derive.FunctionNames(), ", "))}
			}
			opts.Functions = append(opts.Functions, k)
		}
	}
	// The probe makes session objects only: read-only sessions suffice.
	tok, err := tf.openWith(true)
	if err != nil {
		return err
	}
	defer tok.Close()
	rep, err := probe.Run(context.Background(), tok, opts)
	if err != nil {
		return err
	}
	switch {
	case *asJSON:
		err = rep.WriteJSON(stdout)
	case *asMarkdown:
		err = rep.WriteMarkdown(stdout)
	default:
		err = rep.WriteText(stdout)
	}
	if err == nil && rep.Incomplete {
		err = exitError{exitIncomplete, errors.New("p11derive: probe: the report is incomplete: the module or a session failed (results with status error), so it does not say what the token can do")}
	}
	return err
}
