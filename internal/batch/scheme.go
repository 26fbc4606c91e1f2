package batch

import (
	"context"
	"errors"
	"fmt"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/scheme"
)

// A Scheme makes each row's key with a published scheme (batch --scheme):
// Derive computes it from the base key and the row's scheme inputs, as the
// scheme packages do (derive/dukpt's InitialKey, derive/emv's
// ICCMasterKey...), with the options the batch gives — a token object
// under a provisional label in keep mode, an extractable session key in
// wrap mode. Everything else is the Deriver's: resume, repeated ids,
// crash-safe keep mode, adoption, wrap-out, the manifest.
type Scheme struct {
	Name   string // the scheme's name: dukpt-ik, emv-mk
	Derive func(ctx context.Context, tok *derive.Token, base *derive.Key, fields []string, o scheme.Options) (*scheme.Result, error)
}

// schemeRow is Do for a Scheme.
func (d *Deriver) schemeRow(ctx context.Context, row *Row) (Out, func(), error) {
	if d.Wrap != nil {
		return d.schemeWrap(ctx, row)
	}
	return d.keepRow(ctx, row, d.schemeMaker(row))
}

// schemeMaker makes a row's key with the scheme.
func (d *Deriver) schemeMaker(row *Row) maker {
	return func(ctx context.Context, label string, persistent bool) (made, error) {
		res, err := d.scheme(ctx, row, scheme.Options{Label: label, Persistent: persistent})
		if err != nil {
			return made{}, err
		}
		return made{key: res.Key, strategy: res.Strategy, kdf: res.Function}, nil
	}
}

// scheme runs the scheme for row; a scheme's refusal of the row's inputs
// is a bad row.
func (d *Deriver) scheme(ctx context.Context, row *Row, o scheme.Options) (*scheme.Result, error) {
	res, err := d.Scheme.Derive(ctx, d.Token, d.Base, row.Fields, o)
	if errors.Is(err, derive.ErrInvalidInput) {
		err = fmt.Errorf("%w: %v", ErrBadRow, err)
	}
	return res, err
}

// schemeWrap makes the row's key extractable, then computes its check
// value, wraps it under the transport key and destroys it (wrapMade).
func (d *Deriver) schemeWrap(ctx context.Context, row *Row) (Out, func(), error) {
	res, err := d.scheme(ctx, row, scheme.Options{Extractable: true})
	if err != nil {
		return Out{}, nil, err
	}
	out, err := d.wrapMade(ctx, d.Token, row, made{key: res.Key, strategy: res.Strategy, kdf: res.Function})
	return out, nil, err
}
