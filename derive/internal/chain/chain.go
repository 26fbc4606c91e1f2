// Package chain runs the derivations of a key-derivation scheme inside a
// token through package derive: it counts their PKCS#11 calls, and destroys
// the intermediate keys on every path (success, error, cancellation,
// panic).
package chain

import (
	"context"
	"errors"
	"slices"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/scheme"
)

// Chain is one scheme derivation in progress.
type Chain struct {
	ctx      context.Context
	tok      *derive.Token
	calls    int
	n        int
	live     []*derive.Key // intermediates still in the token
	out      *derive.Key   // the final key, once made
	kt       derive.KeyType
	function string
	strategy derive.Strategy
	steps    []derive.Strategy
	warnings []string
}

// Run calls fn with a new Chain and returns the final key fn made with
// Final. Intermediates fn made with Step are destroyed before
// Run returns, whatever happens; if fn fails, panics, or an intermediate
// cannot be destroyed, the final key is destroyed too and Run fails.
func Run(ctx context.Context, tok *derive.Token, fn func(c *Chain) error) (res *scheme.Result, err error) {
	c := &Chain{ctx: ctx, tok: tok}
	defer func() {
		p := recover()
		derr := c.cleanup()
		if p != nil || err != nil || derr != nil {
			if c.out != nil {
				c.destroy(c.out)
				c.out = nil
			}
			if p != nil {
				panic(p)
			}
			if err == nil {
				err = derr
			}
			res = nil
		}
	}()
	if err := fn(c); err != nil {
		return nil, err
	}
	if c.out == nil {
		return nil, errors.New("p11derive: internal error: scheme made no key")
	}
	// The intermediates go now, so that their destruction is counted.
	if err := c.cleanup(); err != nil {
		return nil, err
	}
	return &scheme.Result{Key: c.out, KeyType: c.kt, Function: c.function, Strategy: c.strategy,
		Derivations: c.n, Strategies: c.steps, Calls: c.calls, Warnings: c.warnings}, nil
}

// Step derives an intermediate key, destroyed when Run returns (or earlier
// with Drop). It should have UseDerive (or whatever the next step needs)
// and nothing more.
func (c *Chain) Step(base *derive.Key, r derive.Request) (*derive.Key, error) {
	res, err := c.derive(base, r)
	if err != nil {
		return nil, err
	}
	c.live = append(c.live, res.Key)
	return res.Key, nil
}

// Final derives the scheme's key. It is called once.
func (c *Chain) Final(base *derive.Key, r derive.Request) (*derive.Key, error) {
	res, err := c.derive(base, r)
	if err != nil {
		return nil, err
	}
	c.out, c.kt = res.Key, r.KeyType
	return res.Key, nil
}

func (c *Chain) derive(base *derive.Key, r derive.Request) (*derive.Result, error) {
	if c.out != nil {
		return nil, errors.New("p11derive: internal error: derivation after the final key")
	}
	res, err := c.tok.Derive(c.ctx, base, r)
	if err != nil {
		return nil, err
	}
	c.n++
	c.calls += res.Calls
	c.function, c.strategy = res.Function.Name(), res.Strategy
	c.steps = append(c.steps, res.Strategy)
	for _, w := range res.Warnings {
		if !slices.Contains(c.warnings, w) {
			c.warnings = append(c.warnings, w)
		}
	}
	return res, nil
}

// Drop destroys an intermediate key made by Step, now. A failure fails the
// scheme: an intermediate left behind is key material nobody will destroy.
func (c *Chain) Drop(k *derive.Key) error {
	for i, l := range c.live {
		if l == k {
			c.live = append(c.live[:i], c.live[i+1:]...)
			return c.destroy(k)
		}
	}
	return nil
}

func (c *Chain) cleanup() error {
	var first error
	for len(c.live) > 0 {
		k := c.live[len(c.live)-1]
		c.live = c.live[:len(c.live)-1]
		if err := c.destroy(k); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// destroy destroys k even when c.ctx is done: clean-up must not be skipped.
func (c *Chain) destroy(k *derive.Key) error {
	c.calls++
	return c.tok.Destroy(context.WithoutCancel(c.ctx), k)
}

func contextDone(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
		return nil
	}
}
