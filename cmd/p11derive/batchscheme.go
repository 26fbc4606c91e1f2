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
                       [--workers N] [--fail-fast] [--max-rows N] [scheme flags]

Derives one key of a scheme per CSV row, inside the token, from the base key
--base, with the scheme's inputs taken from the row's columns:

  dukpt-ik  id,ksn          the initial key of each KSN's initial key ID (X9.24-3)
  emv-mk    id,pan[,psn]    the ICC master key of each PAN (--option a|b|c)

Wrap mode (--wrap-key): each key is made extractable, wrapped under the
transport key and destroyed; OUT.csv holds id,wrapped,kcv,strategy,kdf.
Keep mode: each key is a token object labelled from --label-template;
OUT.csv holds id,label,kcv,strategy,kdf. A row already in OUT.csv is
skipped (resume); a bad row is reported by line and skipped. Check values
are the ecb convention.
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

// schemeRow derives the key of one row: fields are the row's columns.
type schemeRow func(ctx context.Context, tok *derive.Token, base *derive.Key, fields []string, o scheme.Options) (*scheme.Result, error)

func cmdBatchScheme(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("batch", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), batchSchemeUsage) }
	var bf batchFlags
	bf.register(fs, batchHelp{
		input:          "input CSV",
		output:         "output CSV",
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
	baseSel, wrapSel, err := bf.parse(fs, args, &baseFlags)
	if err != nil {
		return err
	}
	if *bf.workers < 1 || *bf.maxRows < 0 {
		return usageError{errors.New("--workers must be at least 1, --max-rows not negative")}
	}
	cols, optional, rowFn, err := batchScheme(*name, *option)
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
	ctx, tok := s.ctx, s.tok
	bk := s.base
	// Session copies, where the token allows them, are much faster to use
	// on tokens that read their key objects from storage (NSS's key
	// database); they go when the command ends.
	if c, err := tok.SessionCopy(ctx, bk); err == nil {
		bk = c
	}
	if wrap != nil {
		if wrap.Key, err = findKey(ctx, tok, wrapSel); err != nil {
			return fmt.Errorf("p11derive: transport key: %w", err)
		}
		if c, err := tok.SessionCopy(ctx, wrap.Key); err == nil {
			wrap.Key = c
		}
		if err := wrap.Check(0); err != nil {
			return err
		}
	}
	job := schemeJob(tok, bk, wrap, *bf.template, rowFn)
	header := (&batch.Deriver{Wrap: wrap}).Header()
	outw, err := batch.OpenOutput(*bf.output, header)
	if err != nil {
		return fmt.Errorf("p11derive: %w", err)
	}
	prog := &batch.Progress{W: batchLog, Prefix: "p11derive batch " + *name}
	if outw.Resumed > 0 {
		prog.Printf("%s holds %d rows already: their ids are skipped", *bf.output, outw.Resumed)
	}
	st, runErr := bf.run(s, outw, job, prog)
	if err := outw.Close(); err != nil && runErr == nil {
		runErr = err
	}
	prog.Clear()
	prog.Printf("%s", summary(st, *bf.workers, 0, 0))
	return bf.end(st, runErr, prog)
}

// batchScheme is the scheme name of 'batch --scheme': the columns it
// takes from each row (required, then optional) and the derivation of a
// row. option is emv-mk's --option.
func batchScheme(name, option string) (cols, optional []string, rowFn schemeRow, err error) {
	switch name {
	case "dukpt-ik":
		cols = []string{"ksn"}
		rowFn = func(ctx context.Context, tok *derive.Token, k *derive.Key, f []string, o scheme.Options) (*scheme.Result, error) {
			// The initial key depends on the KSN's initial key ID only;
			// a device's first KSN has counter 0.
			b, err := hex.DecodeString(f[0])
			if err != nil || len(b) != dukpt.KSNLen {
				return nil, scheme.Inputf("dukpt", "ksn", "a KSN is %d bytes of hex", dukpt.KSNLen)
			}
			return dukpt.InitialKey(ctx, tok, k, b[:dukpt.IKIDLen], o)
		}
	case "emv-mk":
		cols, optional = []string{"pan"}, []string{"psn"}
		opt := map[string]emv.Option{"a": emv.OptionA, "b": emv.OptionB, "c": emv.OptionC}[strings.ToLower(option)]
		if opt == 0 {
			return nil, nil, nil, usageError{fmt.Errorf("--option: %q is not a, b or c", option)}
		}
		rowFn = func(ctx context.Context, tok *derive.Token, k *derive.Key, f []string, o scheme.Options) (*scheme.Result, error) {
			return emv.ICCMasterKey(ctx, tok, k, opt, f[0], f[1], o)
		}
	case "":
		return nil, nil, nil, usageError{errors.New("--scheme is required")}
	default:
		return nil, nil, nil, usageError{fmt.Errorf("--scheme: %q is not a batch scheme (dukpt-ik, emv-mk)", name)}
	}
	return cols, optional, rowFn, nil
}

// schemeJob is the job of 'batch --scheme': it derives each row's key from
// bk with rowFn, then wraps it under wrap's key and destroys it (wrap
// mode) or keeps it under template's label (keep mode).
func schemeJob(tok *derive.Token, bk *derive.Key, wrap *batch.Wrap, template string, rowFn schemeRow) batch.Job {
	return batch.JobFunc(func(ctx context.Context, r *batch.Row) (out batch.Out, undo func(), err error) {
		o := scheme.Options{Extractable: wrap != nil}
		if wrap == nil {
			o.Label, o.Persistent = strings.ReplaceAll(template, "{id}", r.ID), true
			if _, err := tok.FindKey(ctx, o.Label); err == nil {
				return batch.Out{}, nil, fmt.Errorf("a key labelled %q exists already", o.Label)
			} else if !errors.Is(err, derive.ErrNotFound) {
				return batch.Out{}, nil, err
			}
		}
		res, err := rowFn(ctx, tok, bk, r.Fields, o)
		if err != nil {
			if errors.Is(err, derive.ErrInvalidInput) {
				err = fmt.Errorf("%w: %v", batch.ErrBadRow, err)
			}
			return batch.Out{}, nil, err
		}
		keep := wrap == nil
		defer func() {
			// Wrap mode: the key goes on every path. Keep mode: it goes
			// when the row fails.
			if !keep || err != nil {
				if derr := tok.Destroy(context.WithoutCancel(ctx), res.Key); derr != nil && err == nil {
					err = derr
				}
			}
			if err != nil {
				out = batch.Out{}
			}
		}()
		kcv, err := tok.CheckValueBy(ctx, res.Key, derive.KCVECB)
		if err != nil {
			return batch.Out{}, nil, err
		}
		out = batch.Out{ID: r.ID, Key: res.Key.Label, KCV: hex.EncodeToString(kcv.Value), Strategy: string(res.Strategy), KDF: res.Function}
		if wrap != nil {
			w, err := batch.WrapKey(ctx, tok, wrap, res.Key)
			if err != nil {
				return batch.Out{}, nil, err
			}
			out.Key = hex.EncodeToString(w)
			return out, nil, nil
		}
		k := res.Key
		return out, func() { tok.Destroy(context.WithoutCancel(ctx), k) }, nil
	})
}
