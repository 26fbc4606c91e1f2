package batch

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
)

// Spec is what every row derives: a function with its parameters, DK's
// type, the strategy and the substitutes allowed.
type Spec struct {
	// KDF and Params name the function as derive.ParseFunction takes them.
	// A row's iv replaces Params["iv"].
	KDF    string
	Params map[string]string
	// KeyType is DK's type.
	KeyType derive.KeyType
	// Strategy forces a strategy; derive.Auto chooses.
	Strategy derive.Strategy
	// Allow lists substitute functions, comma-separated, as
	// derive.ParseAllow takes them. The first row decides: if it ran a
	// substitute, every other row computes that substitute (one batch, one
	// function).
	Allow string
}

// WrapMech is a mechanism that wraps DK under a transport key.
type WrapMech struct {
	Name string // the command's --wrap-mech
	CKM  uint   // CKM_*

	transport derive.Cipher // the transport key's cipher
	multiple  int           // DK's length must be a multiple of it (0: any)
	min       int           // and at least this long
	iv        bool          // the mechanism takes an IV
}

// The wrap mechanisms.
//
// CKM_AES_KEY_WRAP (RFC 3394) gives the same bytes on every token; DK's
// length must be a multiple of 8, at least 16 (every AES, DES2 and DES3
// key). CKM_AES_KEY_WRAP_PAD is not portable: SoftHSM2 2.6.1 computes RFC
// 5649 (24 bytes for an AES-128 key) and NSS softoken 3.87 RFC 3394 over
// the key padded PKCS#7-style to a multiple of 8 (32 bytes), as PKCS#11
// 3.0 defines it. CKM_DES3_CBC takes an IV; see Wrap.IV.
var wrapMechs = []WrapMech{
	{Name: "aes-key-wrap", CKM: 0x2109, transport: derive.AES, multiple: 8, min: 16},
	{Name: "aes-key-wrap-pad", CKM: 0x210A, transport: derive.AES, min: 1},
	{Name: "des3-ecb", CKM: pkcs11.CKM_DES3_ECB, transport: derive.DES3, multiple: 8, min: 8},
	{Name: "des3-cbc", CKM: pkcs11.CKM_DES3_CBC, transport: derive.DES3, multiple: 8, min: 8, iv: true},
}

// WrapMechNames lists the wrap mechanisms by name.
func WrapMechNames() []string {
	var names []string
	for _, m := range wrapMechs {
		names = append(names, m.Name)
	}
	return names
}

// ParseWrapMech returns the wrap mechanism called name.
func ParseWrapMech(name string) (WrapMech, error) {
	for _, m := range wrapMechs {
		if m.Name == name {
			return m, nil
		}
	}
	return WrapMech{}, fmt.Errorf("unknown wrap mechanism %q (%s)", name, strings.Join(WrapMechNames(), ", "))
}

// Wrap says how DK leaves the token in wrap mode.
type Wrap struct {
	Key  *derive.Key // the transport key: CKA_WRAP, of the mechanism's cipher
	Mech WrapMech
	// Keys is the transport key on each member of the Deriver's Group
	// (group mode): the same key, proven by check value by whoever found
	// them (the command does). Key is then any one of them, for the
	// checks of Check.
	Keys map[*derive.Token]*derive.Key
	// IV is des3-cbc's IV, 8 bytes; nil means 8 zero bytes. A fixed IV
	// (rather than a random one per row) keeps the output a pure function of
	// the input, as the partner who unwraps expects one agreed IV; DK is a
	// full-entropy key, so the usual reason for a fresh IV (hiding repeated
	// plaintext) does not apply.
	IV []byte
}

// Deriver is the Job of the p11derive batch command: it derives the key of
// a row inside the token and either keeps it there (keep mode: a token
// object labelled from LabelTemplate) or wraps it under a transport key and
// destroys it (wrap mode, when Wrap is set). DK is never in the clear on the
// host: in wrap mode it is made sensitive and extractable, wrapped by
// C_WrapKey, and destroyed on every path.
//
// With a Group (wrap mode only), rows are derived on its members, each on
// the least busy (see derive.Group): a member that fails as a device is
// taken out, and its row derived again on another member — by the Group
// when the derivation failed, here, once, when the check value or the
// wrap did after DK was made (DK is destroyed first, so a row's key is
// made once and written once). Keep mode refuses a Group: a token object
// would exist on one member alone, and a retry after a failure of
// unknown outcome could make it twice.
type Deriver struct {
	Token *derive.Token
	Base  *derive.Key
	// Group, when set, derives on its members instead of Token and Base
	// (which are then unused); Wrap.Keys holds the transport key of each.
	Group *derive.Group
	Spec  Spec
	// Scheme, when set, makes each row's key with a published scheme from
	// the row's Fields (NewSchemeInput) instead of Spec's function from its
	// data: batch --scheme. Spec is then unused.
	Scheme *Scheme
	// LabelTemplate is DK's label in keep mode: "{id}" is replaced by the
	// row's id (e.g. "dk-{id}").
	LabelTemplate string
	// Wrap, when set, selects wrap mode.
	Wrap *Wrap
	// RowIVs says that the input has an iv column: rows may bring their own
	// CBC IV. Without it, a CBC function needs its IV in Spec.Params.
	RowIVs bool
	// Run is the output's run tag (Manifest.Run): keep mode makes each key
	// under a provisional label carrying it (PendingLabel), and gives it
	// its final label once it is complete. Check sets a random one if it is
	// empty. Set it before Check and Scan.
	Run string

	mu      sync.Mutex
	create  sync.Mutex // token objects are made one at a time (see keepRow)
	checked bool
	fn      derive.Function      // Spec's function, for rows without an iv
	allow   []derive.Function    // and its substitutes
	pinned  string               // the substitute the first row ran, if it ran one
	profile *derive.Profile      // of the first row derived
	flight  map[string]bool      // labels being derived (keep mode)
	plan    atomic.Pointer[plan] // fn and allow, and the batch's function once known: read by every row without mu
	labels  *labelSet            // the keys found by Scan whose labels fit the template
	pending []string             // provisional labels of this run found by Scan
	adopted atomic.Int64
}

// plan is what rows without an iv derive: set by Check, and again when the
// first row derived fixes the batch's function (kdf, "" until then).
type plan struct {
	fn    derive.Function
	allow []derive.Function
	kdf   string
}

// Header is the header row of the output.
func (d *Deriver) Header() []string {
	if d.Wrap != nil {
		return []string{"id", "wrapped", "kcv", "strategy", "kdf"}
	}
	return []string{"id", "label", "kcv", "strategy", "kdf"}
}

// Check validates the configuration before any row: the function and its
// substitutes, the label template, the transport key and the mechanism.
func (d *Deriver) Check() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Group != nil {
		if err := d.checkGroup(); err != nil {
			return err
		}
	} else if d.Token == nil || d.Base == nil {
		return errors.New("batch: no token or base key")
	}
	if d.Scheme == nil {
		fn, allow, err := d.parse(nil)
		if err != nil {
			return err
		}
		d.fn, d.allow = fn, allow
		if !d.RowIVs && needsIV(fn) {
			return fmt.Errorf("%s needs an IV: give --iv, or an iv column in the input", fn.Name())
		}
	} else if d.Scheme.Derive == nil || d.Group != nil {
		return errors.New("batch: a scheme needs its Derive, and one token")
	}
	if w := d.Wrap; w != nil {
		if w.Key == nil {
			return errors.New("batch: no transport key")
		}
		m := w.Mech
		keys := []*derive.Key{w.Key}
		for _, k := range w.Keys {
			keys = append(keys, k)
		}
		for _, k := range keys {
			if k.Cipher() != m.transport {
				return fmt.Errorf("--wrap-mech %s needs a transport key of type %s; %q is not one", m.Name, strings.ToUpper(m.transport.String()), k.Label)
			}
			if !k.Wrap {
				return fmt.Errorf("transport key %q lacks CKA_WRAP", k.Label)
			}
		}
		// A scheme's key length is known from its first row: the token
		// refuses a wrap that does not fit.
		if n := d.Spec.KeyType.Len(); d.Scheme == nil && (n < m.min || (m.multiple > 0 && n%m.multiple != 0)) {
			return fmt.Errorf("--wrap-mech %s cannot wrap a %d-byte key (%s)", m.Name, n, d.Spec.KeyType)
		}
		if m.iv {
			if w.IV == nil {
				w.IV = make([]byte, 8)
			}
			if len(w.IV) != 8 {
				return fmt.Errorf("--wrap-iv: %s needs an 8-byte IV, got %d bytes", m.Name, len(w.IV))
			}
		} else if w.IV != nil {
			return fmt.Errorf("--wrap-iv: %s takes no IV", m.Name)
		}
	} else if !strings.Contains(d.LabelTemplate, "{id}") {
		return fmt.Errorf("--label-template %q lacks {id}: every key would get the same label", d.LabelTemplate)
	}
	if d.Run == "" {
		// No output's tag: one of this run only (a rerun cannot know its
		// provisional keys; give Run to have it).
		var m Manifest
		m.NewRun()
		d.Run = m.Run
	}
	d.checked = true
	d.plan.Store(&plan{fn: d.fn, allow: d.allow})
	return nil
}

// checkGroup checks a Deriver of a Group: wrap mode, with a transport key
// on every member. The caller holds mu.
func (d *Deriver) checkGroup() error {
	if d.Wrap == nil {
		return errors.New("keep mode takes one token: a key kept on one member of a group exists on that member alone (derive with several tokens in wrap mode)")
	}
	for _, m := range d.Group.Members() {
		if d.Wrap.Keys[m.Token] == nil {
			return fmt.Errorf("batch: no transport key on group member %s", m.Name)
		}
	}
	return nil
}

// needsIV reports whether f is a CBC function without its IV.
func needsIV(f derive.Function) bool {
	switch f := f.(type) {
	case derive.Encrypt:
		return f.Mode == derive.CBC && len(f.IV) == 0
	case derive.Decrypt:
		return f.Mode == derive.CBC && len(f.IV) == 0
	}
	return false
}

// parse returns the function for a row with iv (nil: Spec's), and the
// substitutes. The caller holds mu.
func (d *Deriver) parse(iv []byte) (derive.Function, []derive.Function, error) {
	params := d.Spec.Params
	if iv != nil {
		params = maps.Clone(params)
		if params == nil {
			params = map[string]string{}
		}
		params["iv"] = hex.EncodeToString(iv)
	}
	if d.pinned != "" {
		fs, err := derive.ParseAllow(d.pinned, params)
		if err != nil {
			return nil, nil, err
		}
		return fs[0], nil, nil
	}
	f, err := derive.ParseFunction(d.Spec.KDF, params)
	if err != nil {
		return nil, nil, err
	}
	allow, err := derive.ParseAllow(d.Spec.Allow, params)
	if err != nil {
		return nil, nil, err
	}
	return f, allow, nil
}

// request returns the derivation request of a row.
func (d *Deriver) request(row *Row) (derive.Request, error) {
	if p := d.plan.Load(); p != nil && row.IV == nil {
		// The common row: no lock (Check stored the plan).
		return derive.Request{Function: p.fn, Data: row.Data, KeyType: d.Spec.KeyType, Strategy: d.Spec.Strategy, Allow: p.allow}, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.checked {
		return derive.Request{}, errors.New("batch: Deriver.Check was not called")
	}
	f, allow := d.fn, d.allow
	if row.IV != nil {
		var err error
		if f, allow, err = d.parse(row.IV); err != nil {
			return derive.Request{}, err
		}
	}
	return derive.Request{Function: f, Data: row.Data, KeyType: d.Spec.KeyType, Strategy: d.Spec.Strategy, Allow: allow}, nil
}

// Profile returns the profile of the first row derived, if any.
func (d *Deriver) Profile() (derive.Profile, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.profile == nil {
		return derive.Profile{}, false
	}
	return *d.profile, true
}

// Adopted is the number of keys found in the token under their final
// labels with no row in the output, proven to be the rows' keys (same check
// value as the row's key derived again) and listed as they are (keep
// mode): keys of a run killed between labelling a key and writing its row,
// or of an earlier run into another output.
func (d *Deriver) Adopted() int { return int(d.adopted.Load()) }

// Do derives the key of one row.
func (d *Deriver) Do(ctx context.Context, row *Row) (Out, func(), error) {
	if d.Scheme != nil {
		return d.schemeRow(ctx, row)
	}
	req, err := d.request(row)
	if err != nil {
		return Out{}, nil, err
	}
	if d.Wrap != nil {
		return d.wrapRow(ctx, row, req)
	}
	return d.keepRow(ctx, row, d.requestMaker(req))
}

// made is a row's key as a derivation or a scheme made it.
type made struct {
	key      *derive.Key
	strategy derive.Strategy
	kdf      string
}

// A maker makes a row's key for keepRow: a token object under label when
// persistent, else a session object (to compare with a key found under the
// row's label).
type maker func(ctx context.Context, label string, persistent bool) (made, error)

// requestMaker makes a row's key by deriving req.
func (d *Deriver) requestMaker(req derive.Request) maker {
	return func(ctx context.Context, label string, persistent bool) (made, error) {
		req.Label, req.Persistent = label, persistent
		res, _, err := d.derive(ctx, req)
		if err != nil {
			return made{}, err
		}
		return made{key: res.Key, strategy: res.Strategy, kdf: res.Function.Name()}, nil
	}
}

// checkValue is a key's check value for the output, the ecb convention
// (for a key that may not encrypt — a scheme's — through a session copy
// with CKA_ENCRYPT; the derived keys can).
func (d *Deriver) checkValue(ctx context.Context, k *derive.Key) ([]byte, error) {
	return d.checkValueOn(ctx, d.Token, k)
}

// checkValueOn is checkValue on the token on (a member of the Group).
func (d *Deriver) checkValueOn(ctx context.Context, on *derive.Token, k *derive.Key) ([]byte, error) {
	kcv, err := on.CheckValueBy(ctx, k, derive.KCVECB)
	if err != nil {
		return nil, err
	}
	return kcv.Value, nil
}

// derive runs one derivation, and holds the batch to one function: the
// first row's (a substitute, if it ran one, is pinned for the others). on
// is the token that holds DK (a member of the Group, if there is one).
func (d *Deriver) derive(ctx context.Context, req derive.Request) (res *derive.Result, on *derive.Token, err error) {
	if res, on, err = d.deriveOn(ctx, req); err != nil {
		return nil, on, err
	}
	return d.pin(ctx, res, on)
}

// deriveOn derives DK on the Token, or on a member of the Group.
func (d *Deriver) deriveOn(ctx context.Context, req derive.Request) (*derive.Result, *derive.Token, error) {
	if d.Group == nil {
		res, err := d.Token.Derive(ctx, d.Base, req)
		return res, d.Token, err
	}
	gr, err := d.Group.Derive(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	return gr.Result, gr.Member, nil
}

// pin holds the batch to the first row's function: a row that computed
// another is destroyed (on on) and fails.
func (d *Deriver) pin(ctx context.Context, res *derive.Result, on *derive.Token) (*derive.Result, *derive.Token, error) {
	if _, err := d.hold(res); err != nil {
		on.Destroy(context.WithoutCancel(ctx), res.Key)
		return nil, on, err
	}
	return res, on, nil
}

// hold holds the batch to one function, the first row's (a substitute, if
// it ran one, is pinned for the others): an error if res computed another.
// It returns the function's name. The caller destroys res.Key on error.
func (d *Deriver) hold(res *derive.Result) (name string, err error) {
	name = res.Function.Name()
	if p := d.plan.Load(); p != nil && p.kdf != "" {
		// The batch's function is known: no lock.
		if name == p.kdf {
			return p.kdf, nil
		}
		return "", fmt.Errorf("computed %s, but this batch computes %s", name, p.kdf)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.profile == nil:
		p := res.Profile()
		d.profile = &p
		if name != d.Spec.KDF {
			d.pinned = name
			d.fn, d.allow, err = d.parse(nil)
		}
		if err == nil {
			d.plan.Store(&plan{fn: d.fn, allow: d.allow, kdf: name})
		}
	case name != d.profile.KDF:
		err = fmt.Errorf("computed %s, but this batch computes %s", name, d.profile.KDF)
	}
	return name, err
}

// wrapRow derives DK sensitive and extractable, computes its check value,
// wraps it under the transport key and destroys it. With a Group, a
// member fault after DK was made there takes the member out, and the row
// is derived again, once, on another member.
func (d *Deriver) wrapRow(ctx context.Context, row *Row, req derive.Request) (Out, func(), error) {
	req.Extractable = true        // to be wrapped; it stays sensitive
	req.Usage = derive.UseEncrypt // for its check value, computed in the token
	if d.Group == nil {
		return d.wrapInSession(ctx, row, req)
	}
	out, on, err := d.wrapOnce(ctx, row, req)
	if err != nil && d.Group != nil && ctx.Err() == nil && d.Group.Failed(on, err) {
		out, _, err = d.wrapOnce(ctx, row, req)
	}
	return out, nil, err
}

// wrapInSession is wrapRow on the Token, in one session of its pool
// (derive.Token.DeriveAndWrap).
func (d *Deriver) wrapInSession(ctx context.Context, row *Row, req derive.Request) (Out, func(), error) {
	res, w, err := d.Token.DeriveAndWrap(ctx, d.Base, req, d.Wrap.Key, d.Wrap.Mech.CKM, d.Wrap.param())
	if err != nil {
		return Out{}, nil, err
	}
	kdf, err := d.hold(res)
	if err != nil {
		return Out{}, nil, err // DK is destroyed already
	}
	key, kcv := hexPair(w.Key, w.KCV)
	return Out{ID: row.ID, Key: key, KCV: kcv, Strategy: string(res.Strategy), KDF: kdf}, nil, nil
}

// hexPair is a and b in hex, in one allocation.
func hexPair(a, b []byte) (string, string) {
	var room [256]byte
	n, m := hex.EncodedLen(len(a)), hex.EncodedLen(len(b))
	buf := room[:0]
	if n+m > len(room) {
		buf = make([]byte, 0, n+m)
	}
	buf = hex.AppendEncode(hex.AppendEncode(buf, a), b)
	s := string(buf)
	return s[:n], s[n:]
}

// wrapOnce is wrapRow on the token the derivation lands on (on; nil if it
// failed there, or found none).
func (d *Deriver) wrapOnce(ctx context.Context, row *Row, req derive.Request) (Out, *derive.Token, error) {
	res, on, err := d.derive(ctx, req)
	if err != nil {
		return Out{}, nil, err
	}
	out, err := d.wrapMade(ctx, on, row, made{key: res.Key, strategy: res.Strategy, kdf: res.Function.Name()})
	return out, on, err
}

// wrapMade computes the check value of the row's key m.key, made on on,
// wraps it under on's transport key and destroys it, on every path
// (panics and cancellation included).
func (d *Deriver) wrapMade(ctx context.Context, on *derive.Token, row *Row, m made) (out Out, err error) {
	defer func() {
		if derr := on.Destroy(context.WithoutCancel(ctx), m.key); derr != nil && err == nil {
			err = derr
		}
		if err != nil {
			out = Out{}
		}
	}()
	kcv, err := d.checkValueOn(ctx, on, m.key)
	if err != nil {
		return Out{}, err
	}
	if err := ctx.Err(); err != nil {
		return Out{}, err
	}
	tk := d.Wrap.Key
	if d.Group != nil {
		tk = d.Wrap.Keys[on]
	}
	wrapped, err := wrapWith(ctx, on, d.Wrap, tk, m.key)
	if err != nil {
		return Out{}, err
	}
	return Out{ID: row.ID, Key: hex.EncodeToString(wrapped), KCV: hex.EncodeToString(kcv),
		Strategy: string(m.strategy), KDF: m.kdf}, nil
}

// WrapKey wraps k under w.Key with w's mechanism (C_WrapKey, in a session of
// the token's pool). k must be extractable; its value never reaches the host
// in the clear.
func WrapKey(ctx context.Context, tok *derive.Token, w *Wrap, k *derive.Key) ([]byte, error) {
	return wrapWith(ctx, tok, w, w.Key, k)
}

// wrapWith is WrapKey under the transport key tk (w.Key, or a member's).
func wrapWith(ctx context.Context, tok *derive.Token, w *Wrap, tk, k *derive.Key) ([]byte, error) {
	wrapped, err := tok.Wrap(ctx, tk, k, w.Mech.CKM, w.param())
	if err != nil {
		return nil, err
	}
	return wrapped, nil
}

// param is the wrap mechanism's parameter: des3-cbc's IV (8 zero bytes if
// none is given), or nil.
func (w *Wrap) param() []byte {
	if !w.Mech.iv {
		return nil
	}
	if w.IV == nil {
		return make([]byte, 8)
	}
	return w.IV
}

// keepRow derives DK as a token object labelled from the template. If a key
// with that label exists (the row's key, left by a run that was stopped
// before writing its row), it is adopted when it is the same key.
func (d *Deriver) keepRow(ctx context.Context, row *Row, mk maker) (Out, func(), error) {
	label := strings.ReplaceAll(d.LabelTemplate, "{id}", row.ID)
	d.mu.Lock()
	if d.flight == nil {
		d.flight = map[string]bool{}
	}
	if d.flight[label] {
		d.mu.Unlock()
		return Out{}, nil, fmt.Errorf("%w: id %q repeats a row being derived", ErrBadRow, row.ID)
	}
	d.flight[label] = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.flight, label)
		d.mu.Unlock()
	}()

	existing, err := d.findLabel(ctx, label)
	switch {
	case err == nil:
		return d.adopt(ctx, row, mk, existing)
	case errors.Is(err, derive.ErrAmbiguous):
		return Out{}, nil, fmt.Errorf("several keys are labelled %q already", label)
	case !errors.Is(err, derive.ErrNotFound):
		return Out{}, nil, err
	}
	// Token objects are made, changed and looked up one at a time:
	// SoftHSM2 2.6.1's file store loses the attributes of token objects
	// written from several sessions at once (C_DeriveKey answers
	// CKR_GENERAL_ERROR or CKR_TEMPLATE_INCONSISTENT, or the key reads
	// back with CKA_SENSITIVE and CKA_TOKEN false, which Derive refuses
	// and destroys) — relabelling one while another is made included, and
	// looking one up (softhsm/SoftHSMv2#573). The check values still run
	// in parallel; with Scan, a row looks its label up only when the
	// token had a key so labelled.
	d.create.Lock()
	res, err := mk(ctx, PendingLabel(d.Run, label), true)
	d.create.Unlock()
	if err != nil {
		return Out{}, nil, err
	}
	testKill("made")
	d.mu.Lock()
	if d.labels != nil {
		d.labels.made1(label)
	}
	d.mu.Unlock()
	kcv, err := d.checkValue(ctx, res.key)
	if err == nil {
		d.create.Lock()
		err = d.claim(ctx, res.key, label)
		d.create.Unlock()
		testKill("labelled")
	}
	destroy := func() {
		d.create.Lock()
		defer d.create.Unlock()
		d.Token.Destroy(context.WithoutCancel(ctx), res.key)
	}
	if err != nil {
		destroy()
		return Out{}, nil, err
	}
	undo := destroy
	return Out{ID: row.ID, Key: label, KCV: hex.EncodeToString(kcv),
		Strategy: string(res.strategy), KDF: res.kdf}, undo, nil
}

// findLabel finds the key labelled label (derive.ErrNotFound if none),
// on the token unless Scan listed the labels and found none so.
func (d *Deriver) findLabel(ctx context.Context, label string) (*derive.Key, error) {
	d.mu.Lock()
	lookUp := d.labels == nil || d.labels.has(label)
	d.mu.Unlock()
	if !lookUp {
		return nil, derive.ErrNotFound
	}
	// With the token objects' writes (keepRow): SoftHSM2 2.6.1 reads every
	// object file to find one, and a file read while another session
	// writes it loses that key's attributes (C_DeriveKey answered
	// CKR_GENERAL_ERROR for a row now and then, 1 run of 25 of TestKeep
	// under load, when the look-ups ran beside).
	d.create.Lock()
	defer d.create.Unlock()
	return d.Token.FindKey(ctx, label)
}

// killAt is P11DERIVE_TEST_KILL, "STEP:N": the process kills itself
// (SIGKILL) at the Nth key reaching STEP ("made": derived under its
// provisional label; "labelled": given its final label, its row not yet
// written), for the kill tests.
var (
	killAt    = os.Getenv("P11DERIVE_TEST_KILL")
	killCount atomic.Int64
)

func testKill(step string) {
	if killAt == "" {
		return
	}
	s, n, _ := strings.Cut(killAt, ":")
	if s != step {
		return
	}
	if want, _ := strconv.Atoi(n); killCount.Add(1) == int64(want) {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// claim gives k, complete, its final label, and checks after that no other
// key has it: a key made under that label meanwhile by a run this
// process's lock does not see (another machine's) is an error, and k is
// destroyed by the caller.
func (d *Deriver) claim(ctx context.Context, k *derive.Key, label string) error {
	if err := d.Token.SetLabel(ctx, k, label); err != nil {
		return err
	}
	hs, err := d.Token.Handles(ctx, derive.Selector{Label: label}, 2)
	if err != nil {
		return err
	}
	if len(hs) != 1 || hs[0] != k.Handle {
		return fmt.Errorf("another key was labelled %q while this row was derived (a batch over the same labels elsewhere?): this row's key is destroyed", label)
	}
	return nil
}

// Scan lists the labels of the token's secret keys once, before a
// keep-mode run, so that rows look a label up only when a key with that
// label existed when the run started; without Scan, every row looks its
// label up in the token (C_FindObjects), which costs as much as the
// derivation on tokens whose look-ups grow with the number of objects
// (SoftHSM2's file store reads every object file on each one). It keeps
// the 16-byte digests of the labels that fit LabelTemplate, and those of
// the keys the run makes (so that a repeated id finds its first key):
// memory that grows with the keys kept in the token, some 40 bytes each.
//
// A key made under a label of the template by another process after Scan
// is not seen: one run at a time per label template.
func (d *Deriver) Scan(ctx context.Context) (int, error) {
	prefix, suffix, _ := strings.Cut(d.LabelTemplate, "{id}")
	if i := strings.LastIndex(suffix, "{id}"); i >= 0 {
		suffix = suffix[i+len("{id}"):]
	}
	labels, err := d.Token.Labels(ctx)
	if err != nil {
		return 0, err
	}
	set := &labelSet{}
	var pending []string
	mine := d.pendingPrefix()
	for _, l := range labels {
		if d.Run != "" && strings.HasPrefix(l, mine) {
			pending = append(pending, l)
			continue
		}
		if strings.HasPrefix(l, prefix) && strings.HasSuffix(l, suffix) && len(l) >= len(prefix)+len(suffix) {
			set.add(l)
		}
	}
	set.sort()
	d.mu.Lock()
	d.labels = set
	d.pending = pending
	d.mu.Unlock()
	return len(set.d), nil
}

// pendingPrefix starts the provisional labels of this run.
func (d *Deriver) pendingPrefix() string { return "p11derive-pending " + d.Run + " " }

// PendingLabel is the provisional label under which keep mode makes the key
// to be labelled final, in run run: the key takes its final label only
// once it is complete (made and its check value computed), so that a key
// found under a final label is always whole. SoftHSM2 does not make token
// objects atomically: a process killed inside C_DeriveKey can leave an
// object with its label and without its value.
func PendingLabel(run, final string) string { return "p11derive-pending " + run + " " + final }

// Cleanup destroys the keys a killed run into the same output left under
// their provisional labels (found by Scan): their rows were never written,
// and the rows are derived again. Keys of other runs are left alone. It
// returns how many it destroyed.
func (d *Deriver) Cleanup(ctx context.Context) (int, error) {
	d.mu.Lock()
	pending := d.pending
	d.pending = nil
	d.mu.Unlock()
	n := 0
	for _, l := range pending {
		hs, err := d.Token.Handles(ctx, derive.Selector{Label: l}, 0)
		if err != nil {
			return n, err
		}
		for _, h := range hs {
			if err := d.Token.Destroy(ctx, &derive.Key{Handle: h, Label: l}); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// labelSet is a set of labels, as 16-byte digests: those Scan found, sorted,
// and those the run made since (a repeated id must find its first key).
// The caller holds Deriver.mu, but for add and sort during Scan.
type labelSet struct {
	d    [][16]byte
	made map[[16]byte]bool
}

func (s *labelSet) add(l string) { s.d = append(s.d, digest(l)) }

func (s *labelSet) sort() {
	slices.SortFunc(s.d, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
}

func (s *labelSet) made1(l string) {
	if s.made == nil {
		s.made = map[[16]byte]bool{}
	}
	s.made[digest(l)] = true
}

func (s *labelSet) has(l string) bool {
	d := digest(l)
	_, ok := slices.BinarySearchFunc(s.d, d, func(a, b [16]byte) int { return bytes.Compare(a[:], b[:]) })
	return ok || s.made[d]
}

// adopt takes an existing key labelled like the row's key as the row's key
// if it is: a sensitive, non-extractable token object of the type, length
// and usage of the row's key, derived again as a session object to
// compare, with its check value. Anything else is somebody else's key,
// and the row fails; the key is left alone.
func (d *Deriver) adopt(ctx context.Context, row *Row, mk maker, k *derive.Key) (Out, func(), error) {
	if !k.Token || !k.Sensitive || k.Extractable {
		return Out{}, nil, fmt.Errorf("a key labelled %q exists already and is not one this batch makes", k.Label)
	}
	res, err := mk(ctx, "", false) // a session object: it is only compared
	if err != nil {
		return Out{}, nil, err
	}
	kcv, err := d.checkValue(ctx, res.key)
	if derr := d.Token.Destroy(context.WithoutCancel(ctx), res.key); err == nil {
		err = derr
	}
	if err != nil {
		return Out{}, nil, err
	}
	if !sameKind(k, res.key) {
		return Out{}, nil, fmt.Errorf("a key labelled %q exists already and is not one this batch makes", k.Label)
	}
	old, err := d.checkValue(ctx, k)
	if err != nil {
		return Out{}, nil, err
	}
	if string(old) != string(kcv) {
		return Out{}, nil, fmt.Errorf("a different key is labelled %q already (check value %x; this row's key has %x)", k.Label, old, kcv)
	}
	d.adopted.Add(1)
	return Out{ID: row.ID, Key: k.Label, KCV: hex.EncodeToString(kcv),
		Strategy: string(res.strategy), KDF: res.kdf}, nil, nil
}

// sameKind reports whether k has the type, length and usage of the key
// this batch made, want.
func sameKind(k, want *derive.Key) bool {
	return k.Type == want.Type && k.Len == want.Len &&
		k.Derive == want.Derive && k.Sign == want.Sign && k.Verify == want.Verify &&
		k.Encrypt == want.Encrypt && k.Decrypt == want.Decrypt && k.Wrap == want.Wrap && k.Unwrap == want.Unwrap
}
