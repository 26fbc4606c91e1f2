// Package chain runs the derivations of a key-derivation scheme inside a
// token: it counts their PKCS#11 calls, and destroys the intermediate keys
// on every path (success, error, cancellation, panic). It also makes the
// few derivations package derive has no function for (one C_DeriveKey with
// a standard mechanism: CKM_XOR_BASE_AND_DATA, SP 800-108 with a TDES-CMAC
// PRF), with derive's safety rules: the same key template, the key's
// attributes read back, and a key weaker than asked for destroyed.
package chain

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/mechanisms"
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
// Final or FinalRaw. Intermediates fn made with Step are destroyed before
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

// Raw is a derivation package derive has no function for: one C_DeriveKey
// with Mechanism and Params from the base key.
type Raw struct {
	Mechanism uint
	Params    mechanisms.Params
	// Function names it in the Result ("xor-base-and-data", ...).
	Function string
}

// FinalRaw derives the scheme's key with one C_DeriveKey of r, with the
// template package derive would use for req (req.Function and req.Data are
// not used). When the token refuses the mechanism, its parameters or the
// key's use with it, the error is a *scheme.RefusedError for schemeName
// wrapping the token's answer; no object is left behind on any error.
func (c *Chain) FinalRaw(schemeName string, base *derive.Key, r Raw, req derive.Request) (*derive.Key, error) {
	if c.out != nil {
		return nil, errors.New("p11derive: internal error: derivation after the final key")
	}
	if !base.Derive {
		return nil, &derive.KeyError{Key: keyName(base), Reason: derive.ErrMissingAttribute,
			Problem: "C_DeriveKey needs CKA_DERIVE=true on the base key"}
	}
	if err := contextDone(c.ctx); err != nil {
		return nil, err
	}
	var dk *derive.Key
	err := c.tok.WithSession(func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
		c.calls++
		info, err := ctx.GetSessionInfo(s)
		if err != nil {
			return &derive.TokenError{Step: "read the session state", Call: "C_GetSessionInfo", Err: err}
		}
		loggedIn := info.State == pkcs11.CKS_RO_USER_FUNCTIONS || info.State == pkcs11.CKS_RW_USER_FUNCTIONS
		tmpl := Template(req, loggedIn)
		var h pkcs11.ObjectHandle
		err = mechanisms.Call(r.Mechanism, r.Params, func(m []*pkcs11.Mechanism) error {
			c.calls++
			var err error
			h, err = ctx.DeriveKey(s, m, base.Handle, tmpl)
			return err
		})
		if err != nil {
			te := &derive.TokenError{Strategy: derive.Native, Step: "derive " + r.Function, Call: "C_DeriveKey", Err: err}
			if refused(err) {
				return &scheme.RefusedError{Scheme: schemeName, Reason: "the token refused " + r.Function, Err: te}
			}
			return te
		}
		k, err := readBack(ctx, s, h, req, &c.calls)
		if err != nil {
			c.calls++
			ctx.DestroyObject(s, h)
			return err
		}
		dk = k
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.n++
	c.out, c.kt, c.function, c.strategy = dk, req.KeyType, r.Function, derive.Native
	c.steps = append(c.steps, derive.Native)
	return dk, nil
}

// refused reports whether err is a token's refusal of a mechanism, its
// parameters or the key's use with it.
func refused(err error) bool {
	var ck pkcs11.Error
	if !errors.As(err, &ck) {
		return false
	}
	switch uint(ck) {
	case pkcs11.CKR_MECHANISM_INVALID, pkcs11.CKR_MECHANISM_PARAM_INVALID,
		pkcs11.CKR_FUNCTION_NOT_SUPPORTED, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED,
		pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_TEMPLATE_INCONSISTENT:
		return true
	}
	return false
}

// Template is derive's template for req's key: sensitive, extractable only
// if asked, a session object unless persistent, private when logged in,
// and exactly the requested usage (derive.DefaultUsage if none).
func Template(req derive.Request, loggedIn bool) []*pkcs11.Attribute {
	kt := req.KeyType
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, kt.CKK()),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, req.Persistent),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, req.Extractable),
	}
	if kt.CKK() == pkcs11.CKK_AES || kt.CKK() == pkcs11.CKK_GENERIC_SECRET {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, kt.Len()))
	}
	if loggedIn {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true))
	}
	if req.Label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, req.Label))
	}
	u := req.Usage
	if u == 0 {
		u = derive.DefaultUsage
	}
	for _, a := range usageAttrs {
		tmpl = append(tmpl, pkcs11.NewAttribute(a.cka, u&a.u != 0))
	}
	return tmpl
}

var usageAttrs = []struct {
	u   derive.Usage
	cka uint
}{
	{derive.UseEncrypt, pkcs11.CKA_ENCRYPT},
	{derive.UseDecrypt, pkcs11.CKA_DECRYPT},
	{derive.UseSign, pkcs11.CKA_SIGN},
	{derive.UseVerify, pkcs11.CKA_VERIFY},
	{derive.UseWrap, pkcs11.CKA_WRAP},
	{derive.UseUnwrap, pkcs11.CKA_UNWRAP},
	{derive.UseDerive, pkcs11.CKA_DERIVE},
}

// readBack reads the attributes of the key just made (never CKA_VALUE) and
// refuses a key weaker than req asked for, with the same rules as derive.
func readBack(ctx *pkcs11.Ctx, s pkcs11.SessionHandle, h pkcs11.ObjectHandle, req derive.Request, calls *int) (*derive.Key, error) {
	types := []uint{pkcs11.CKA_KEY_TYPE, pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE,
		pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE,
		pkcs11.CKA_DERIVE, pkcs11.CKA_SIGN, pkcs11.CKA_VERIFY, pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT,
		pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP}
	ckk := req.KeyType.CKK()
	if ckk == pkcs11.CKK_AES || ckk == pkcs11.CKK_GENERIC_SECRET {
		types = append(types, pkcs11.CKA_VALUE_LEN)
	}
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	*calls += 2 // miekg/pkcs11 asks for the lengths first
	got, err := ctx.GetAttributeValue(s, h, tmpl)
	if err != nil {
		return nil, &derive.TokenError{Strategy: derive.Native, Step: "read the derived key's attributes", Call: "C_GetAttributeValue", Err: err}
	}
	v := map[uint][]byte{}
	for _, a := range got {
		v[a.Type] = a.Value
	}
	k := &derive.Key{Handle: h, Label: req.Label, Len: req.KeyType.Len()}
	k.Type, _ = ulong(v[pkcs11.CKA_KEY_TYPE])
	if n, ok := ulong(v[pkcs11.CKA_VALUE_LEN]); ok {
		k.Len = int(n)
	}
	var p []string
	for _, b := range []struct {
		dst *bool
		cka uint
	}{
		{&k.Token, pkcs11.CKA_TOKEN}, {&k.Private, pkcs11.CKA_PRIVATE},
		{&k.Sensitive, pkcs11.CKA_SENSITIVE}, {&k.Extractable, pkcs11.CKA_EXTRACTABLE},
		{&k.AlwaysSensitive, pkcs11.CKA_ALWAYS_SENSITIVE}, {&k.NeverExtractable, pkcs11.CKA_NEVER_EXTRACTABLE},
		{&k.Derive, pkcs11.CKA_DERIVE}, {&k.Sign, pkcs11.CKA_SIGN}, {&k.Verify, pkcs11.CKA_VERIFY},
		{&k.Encrypt, pkcs11.CKA_ENCRYPT}, {&k.Decrypt, pkcs11.CKA_DECRYPT},
		{&k.Wrap, pkcs11.CKA_WRAP}, {&k.Unwrap, pkcs11.CKA_UNWRAP},
	} {
		val := v[b.cka]
		if len(val) != 1 {
			if b.cka == pkcs11.CKA_SENSITIVE || b.cka == pkcs11.CKA_EXTRACTABLE {
				p = append(p, fmt.Sprintf("attribute %#x unreadable", b.cka))
			}
			continue
		}
		*b.dst = val[0] != 0
	}
	if !k.Sensitive {
		p = append(p, "CKA_SENSITIVE is false")
	}
	if k.Extractable && !req.Extractable {
		p = append(p, "CKA_EXTRACTABLE is true")
	}
	if k.Token != req.Persistent {
		p = append(p, fmt.Sprintf("CKA_TOKEN is %v", k.Token))
	}
	if k.Type != ckk {
		p = append(p, fmt.Sprintf("CKA_KEY_TYPE is %#x", k.Type))
	}
	if k.Len != req.KeyType.Len() {
		p = append(p, fmt.Sprintf("the key is %d bytes", k.Len))
	}
	if len(p) > 0 {
		return nil, &derive.WeakKeyError{Problems: p}
	}
	return k, nil
}

func ulong(b []byte) (uint, bool) {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b)), true
	case 4:
		return uint(binary.NativeEndian.Uint32(b)), true
	}
	return 0, false
}

func keyName(k *derive.Key) string {
	if k.Label != "" {
		return fmt.Sprintf("%q", k.Label)
	}
	return fmt.Sprintf("handle %d", k.Handle)
}

func contextDone(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
		return nil
	}
}
