package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/p11derive/p11derive/derive"
)

// cmdKeys lists the secret keys the token's session sees (all of them, or
// those --key, --id or the URI's object=/id= select), with their check
// values: a table, or with --json the keys document (docs/json.md).
func cmdKeys(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	var kf keyFlags
	kf.register(fs, "key", "id", "the keys to list (default: every secret key)")
	kcvMethod := kcvFlag(fs)
	asJSON := fs.Bool("json", false, "print the keys as JSON (docs/json.md) rather than a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	uriKey, err := tf.uriKey()
	if err != nil {
		return err
	}
	sel, err := kf.selector(uriKey)
	if err != nil {
		return err
	}
	km, err := parseKCV(*kcvMethod)
	if err != nil {
		return err
	}
	tok, err := tf.open()
	if err != nil {
		return err
	}
	defer tok.Close()
	ctx := rootCtx
	keys, err := tok.Keys(ctx, sel)
	if err != nil {
		return err
	}
	// The same order every time: by label, then ID.
	sort.SliceStable(keys, func(i, j int) bool {
		if keys[i].Label != keys[j].Label {
			return keys[i].Label < keys[j].Label
		}
		return bytes.Compare(keys[i].ID, keys[j].ID) < 0
	})
	doc := keysDoc{SchemaVersion: schemaVersion, Keys: make([]keyJSON, len(keys))}
	for i, k := range keys {
		if ctx.Err() != nil {
			return errInterrupted
		}
		doc.Keys[i] = describeKCV(ctx, tok, k, km)
	}
	if *asJSON {
		return printJSON(stdout, doc)
	}
	return writeKeysTable(stdout, doc.Keys)
}

// writeKeysTable prints keys as a table, one line each; a missing value is
// "-".
func writeKeysTable(w io.Writer, keys []keyJSON) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tID\tTYPE\tLEN\tKCV\tKCV_METHOD\tSENSITIVE\tEXTRACTABLE\tTOKEN\tUSAGES")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, k := range keys {
		n := "-"
		if k.Len > 0 {
			n = strconv.Itoa(k.Len)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%v\t%v\t%s\n", dash(printableLabel(k.Label)), dash(k.ID), k.KeyType, n,
			dash(k.KCV), k.KCVMethod, k.Sensitive, k.Extractable, k.Token, dash(strings.Join(k.Usages, ",")))
	}
	return tw.Flush()
}

// printableLabel is a label as the table shows it: quoted if it has
// spaces or characters a terminal would not show as themselves.
func printableLabel(l string) string {
	if q := strconv.Quote(l); q[1:len(q)-1] != l || strings.ContainsAny(l, " \t") {
		return q
	}
	return l
}

// cmdDestroy destroys the one secret key --key and/or --id (or the URI's
// object=/id=) select, with --yes: an ambiguous selection is refused, and
// without --yes nothing is done.
func cmdDestroy(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("destroy", flag.ContinueOnError)
	var tf tokenFlags
	tf.register(fs)
	var kf keyFlags
	kf.register(fs, "key", "id", "the key to destroy")
	yes := fs.Bool("yes", false, "really destroy it: the key and every key only it can derive are gone for good")
	asJSON := fs.Bool("json", false, "print the destroyed key as JSON (docs/json.md) rather than a line")
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
	if !*yes {
		return usageError{fmt.Errorf("destroying the %s cannot be undone: add --yes to confirm", sel)}
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
	j := keyOf(k)
	if err := tok.Destroy(ctx, k); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, keysDoc{SchemaVersion: schemaVersion, Keys: []keyJSON{j}})
	}
	fmt.Fprintf(stdout, "destroyed %s\n", derive.Selector{Label: k.Label, ID: k.ID})
	return nil
}
