package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/dukpt"
	"github.com/p11derive/p11derive/derive/emv"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/batch"
)

// batchSchemeUsage is the help of 'p11derive batch --scheme'.
const batchSchemeUsage = `usage: p11derive batch --scheme NAME [token flags] --base LABEL --input IN.csv --output OUT.csv
                       [--wrap-key LABEL [--wrap-mech MECH] [--wrap-iv HEX] | --label-template dk-{id}]
                       [--workers N] [--fail-fast] [--max-rows N] [--new-output] [scheme flags]

Derives one key of a scheme per CSV row, inside the token, from the base key
--base, with the scheme's inputs taken from the row's columns:

  dukpt-ik  id,ksn          the initial key of each KSN's initial key ID (X9.24-3)
  emv-mk    id,pan[,psn]    the ICC master key of each PAN (--option a|b|c)

Wrap mode (--wrap-key): each key is made extractable, wrapped under the
transport key and destroyed; OUT.csv holds id,wrapped,kcv,strategy,kdf.
Keep mode: each key is a token object labelled from --label-template,
made under a provisional label and given its own once complete (a killed
run's keys are found, checked and adopted, or destroyed, by the rerun);
OUT.csv holds id,label,kcv,strategy,kdf. Check values are the ecb
convention.

OUT.csv starts with a comment line holding the run's parameters (scheme
and option, base and transport keys by label, CKA_ID and check value,
label template, version): an existing OUT.csv is used only if it is an
output of the same run (--new-output moves another aside to OUT.csv.N);
--output - writes to stdout. A row already in OUT.csv is skipped (resume);
a bad row (a repeated id among them) is reported by line and skipped.
`

// isSchemeBatch reports whether the batch command line asks for a scheme.
func isSchemeBatch(args []string) bool {
	for _, a := range args {
		if a == "--scheme" || a == "-scheme" || strings.HasPrefix(a, "--scheme=") || strings.HasPrefix(a, "-scheme=") {
			return true
		}
	}
	return false
}

func cmdBatchScheme(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("batch", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), batchSchemeUsage) }
	var bf batchFlags
	bf.register(fs, batchHelp{
		input:          "input CSV",
		output:         "output CSV (- for stdout)",
		wrapKey:        "the transport key: wrap each key under it, and destroy it",
		wrapIV:         "des3-cbc's IV, `hex`",
		template:       "keep mode: each key's label; {id} is the row's id",
		workers:        "rows processed at once",
		workersDefault: 4,
		maxRows:        "stop after this many new rows (0: all)",
	})
	name := fs.String("scheme", "", "the scheme: dukpt-ik, emv-mk")
	var baseFlags keyFlags
	baseFlags.register(fs, "base", "base-id", "the base key (BDK, issuer master key)")
	option := fs.String("option", "a", "emv-mk: master key derivation option a, b or c")
	newOutput := fs.Bool("new-output", false, "when --output is an output of this kind made with other parameters, move it aside (to OUTPUT.N) and start a new one")
	baseSel, wrapSel, err := bf.parse(fs, args, &baseFlags)
	if err != nil {
		return err
	}
	if err := bf.checkCounts(); err != nil {
		return err
	}
	if len(bf.tf.uris) > 1 {
		return usageError{errors.New("batch --scheme takes one token: give one --uri")}
	}
	cols, optional, sch, params, err := batchScheme(*name, *option)
	if err != nil {
		return err
	}
	wrap, err := bf.wrap()
	if err != nil {
		return err
	}

	s, err := bf.open(baseSel, func(r io.Reader) (*batch.Input, error) { return batch.NewSchemeInput(r, cols, optional) })
	if err != nil {
		return err
	}
	defer s.Close()
	prog := &batch.Progress{W: batchLog, Prefix: "p11derive batch " + *name}
	// Session copies, where the token allows them, are much faster to use
	// on tokens that read their key objects from storage (NSS's key
	// database); they go when the command ends.
	d := &batch.Deriver{Token: s.tok, Scheme: sch, Wrap: wrap, LabelTemplate: *bf.template}
	m := &batch.Manifest{Version: version, Scheme: sch.Name, Params: params, Strategy: "auto"}
	if err := finishDeriver(s, d, m, wrapSel, true, prog); err != nil {
		return err
	}
	return runBatch(stdout, s, &bf, d, m, prog, *newOutput, "")
}

// batchScheme is the scheme name of 'batch --scheme': the columns it
// takes from each row (required, then optional), the scheme that derives
// a row's key, and its options for the manifest. option is emv-mk's
// --option.
func batchScheme(name, option string) (cols, optional []string, sch *batch.Scheme, params map[string]string, err error) {
	switch name {
	case "dukpt-ik":
		cols = []string{"ksn"}
		sch = &batch.Scheme{Name: name, Derive: func(ctx context.Context, tok *derive.Token, k *derive.Key, f []string, o scheme.Options) (*scheme.Result, error) {
			// The initial key depends on the KSN's initial key ID only;
			// a device's first KSN has counter 0.
			b, err := hex.DecodeString(f[0])
			if err != nil || len(b) != dukpt.KSNLen {
				return nil, scheme.Inputf("dukpt", "ksn", "a KSN is %d bytes of hex", dukpt.KSNLen)
			}
			return dukpt.InitialKey(ctx, tok, k, b[:dukpt.IKIDLen], o)
		}}
	case "emv-mk":
		cols, optional = []string{"pan"}, []string{"psn"}
		o := strings.ToLower(option)
		opt := map[string]emv.Option{"a": emv.OptionA, "b": emv.OptionB, "c": emv.OptionC}[o]
		if opt == 0 {
			return nil, nil, nil, nil, usageError{fmt.Errorf("--option: %q is not a, b or c", option)}
		}
		params = map[string]string{"option": o}
		sch = &batch.Scheme{Name: name, Derive: func(ctx context.Context, tok *derive.Token, k *derive.Key, f []string, o scheme.Options) (*scheme.Result, error) {
			return emv.ICCMasterKey(ctx, tok, k, opt, f[0], f[1], o)
		}}
	case "":
		return nil, nil, nil, nil, usageError{errors.New("--scheme is required")}
	default:
		return nil, nil, nil, nil, usageError{fmt.Errorf("--scheme: %q is not a batch scheme (dukpt-ik, emv-mk)", name)}
	}
	return cols, optional, sch, params, nil
}
