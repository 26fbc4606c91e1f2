package probe

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
)

// baseKey is one of the probe's base keys: imported with a known value
// (value set) or generated in the token (value nil).
type baseKey struct {
	kind  baseKind
	key   *derive.Key
	value []byte
	info  BaseKey
	// moduleFailed: neither import nor generation worked, and the module
	// or session failed (not the token refusing): results are errors.
	moduleFailed bool
	genErr       string // the generation's failure
}

// labelPrefix marks the probe's session objects.
const labelPrefix = "p11derive-probe-"

// usageOf is the usage of a test key for a strategy needing attrs: those
// attributes only (key-usage policies refuse keys that may do everything).
func usageOf(kind baseKind, attrs []uint) derive.Usage {
	if u := derive.UsageOf(attrs); u != 0 {
		return u
	}
	return allUsage(kind)
}

// allUsage is what a generated key shared by every strategy may do:
// derive, MAC, unwrap and encrypt (generic secrets: derive and MAC).
func allUsage(kind baseKind) derive.Usage {
	if kind == baseGeneric {
		return derive.UseDerive | derive.UseSign
	}
	return derive.UseDerive | derive.UseSign | derive.UseEncrypt | derive.UseUnwrap
}

func usageNames(u derive.Usage) []string {
	var out []string
	for _, n := range []struct {
		u    derive.Usage
		name string
	}{{derive.UseDerive, "CKA_DERIVE"}, {derive.UseSign, "CKA_SIGN"}, {derive.UseVerify, "CKA_VERIFY"},
		{derive.UseEncrypt, "CKA_ENCRYPT"}, {derive.UseDecrypt, "CKA_DECRYPT"}, {derive.UseWrap, "CKA_WRAP"},
		{derive.UseUnwrap, "CKA_UNWRAP"}} {
		if u&n.u != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// makeBaseKey makes a session key of the kind with the usage: imported
// with the kind's known value; if the token refuses (or Options.NoImport),
// the generated key of the kind that every strategy shares (so that they
// can be cross-checked); if the token refuses that, a generated key with
// the usage only. A refusal in a read-only session (CKR_SESSION_READ_ONLY)
// is retried in a read-write session only with Options.ReadWrite. The
// baseKey has key nil when nothing worked.
func (p *prober) makeBaseKey(kind baseKind, usage derive.Usage) *baseKey {
	label := labelPrefix + kind.String()
	var why []string
	var importCKR string
	if !p.opts.NoImport {
		spec := derive.KeySpec{Label: label, Type: kind.keyType(), Usage: usage}
		bk := &baseKey{kind: kind, value: baseValues[kind], info: BaseKey{Type: kind.String(), Source: "imported", Usage: usageNames(usage)}}
		err := p.make(bk, func(tok *derive.Token) (*derive.Key, error) { return tok.Import(p.ctx, spec, baseValues[kind]) })
		if err == nil {
			return p.keep(bk)
		}
		importCKR = ckrName(err)
		why = append(why, "import: "+trim(err))
	}
	if p.shared[kind] == nil {
		p.shared[kind] = p.generate(kind, allUsage(kind), importCKR, why)
	}
	sh := p.shared[kind]
	// A key with fewer uses may be accepted where the shared one was
	// refused; a module that failed fails that too.
	if sh.key != nil || usage == allUsage(kind) || sh.moduleFailed {
		return sh
	}
	why = append(why, "generate with "+strings.Join(usageNames(allUsage(kind)), ", ")+": "+sh.genErr)
	return p.generate(kind, usage, importCKR, why)
}

// generate generates a base key of the kind with the usage; why are the
// earlier failures, for the report.
func (p *prober) generate(kind baseKind, usage derive.Usage, importCKR string, why []string) *baseKey {
	label := labelPrefix + kind.String()
	bk := &baseKey{kind: kind, info: BaseKey{Type: kind.String(), Source: "generated", Usage: usageNames(usage), ImportCKR: importCKR}}
	spec := derive.KeySpec{Label: label, Type: kind.keyType(), Usage: usage}
	err := p.make(bk, func(tok *derive.Token) (*derive.Key, error) { return tok.Generate(p.ctx, spec) })
	if err == nil {
		if len(why) > 0 {
			bk.info.Reason = "the token refused to import a key of known value: " + strings.Join(why, "; ")
		}
		return p.keep(bk)
	}
	bk.info.Source = "none"
	bk.info.GenerateCKR = ckrName(err)
	bk.genErr = trim(err)
	bk.info.Reason = strings.Join(append(why, "generate: "+trim(err)), "; ")
	bk.moduleFailed = moduleFailure(err)
	p.made = append(p.made, bk)
	return bk
}

// make runs mk (an import or a generation) in the probe's Token, and in a
// read-write one (Options.ReadWrite) if a read-only session was the
// reason it failed; it records in bk what happened.
func (p *prober) make(bk *baseKey, mk func(*derive.Token) (*derive.Key, error)) error {
	k, err := mk(p.tok)
	if err != nil && ckrCode(err) == pkcs11.CKR_SESSION_READ_ONLY {
		rw := p.readWrite()
		if rw == nil {
			how := "p11derive probe --rw (Options.ReadWrite) would retry in a read-write session"
			if p.rwErr != nil {
				how = "opening a read-write session failed: " + trim(p.rwErr)
			}
			return fmt.Errorf("%w (refused in a read-only session; %s)", err, how)
		}
		k, err = mk(rw)
		if err == nil {
			bk.info.Session = "read-write"
			bk.info.Notes = append(bk.info.Notes, "made in a read-write session (--rw): the token refused it in a read-only one (CKR_SESSION_READ_ONLY)")
		}
	}
	if err != nil {
		return err
	}
	bk.key = k
	for _, w := range k.Warnings {
		bk.info.Notes = append(bk.info.Notes, strings.TrimPrefix(w, "p11derive: "))
	}
	return nil
}

func (p *prober) keep(bk *baseKey) *baseKey {
	p.made = append(p.made, bk)
	return bk
}

// ckrName is the CKR_ name of the token's answer behind err, or "".
func ckrName(err error) string {
	if c := ckrCode(err); c != 0 {
		return ckrString(c)
	}
	return ""
}

// ckrString names a CK_RV: "CKR_MECHANISM_INVALID", or its number in hex.
func ckrString(c uint) string {
	s := pkcs11.Error(c).Error() // "pkcs11: 0x70: CKR_MECHANISM_INVALID"
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return fmt.Sprintf("CKR(%#x)", c)
}

// ckrCode is the token's answer behind err, or 0.
func ckrCode(err error) uint {
	var te *derive.TokenError
	if errors.As(err, &te) {
		return te.CKR()
	}
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		return uint(pe)
	}
	return 0
}

// pkcs11Prefix is how github.com/miekg/pkcs11 writes a CK_RV before its
// name.
var pkcs11Prefix = regexp.MustCompile(`pkcs11: 0x[0-9A-Fa-f]+: `)

// trim is err's message without the "p11derive: " prefixes and miekg's
// "pkcs11: 0x70: " before a CKR_ name.
func trim(err error) string {
	return pkcs11Prefix.ReplaceAllString(strings.ReplaceAll(err.Error(), "p11derive: ", ""), "")
}

// fakeKey stands for a base key of the kind that has every attribute, for
// planning without an object (Token.Plan reads attributes only).
func fakeKey(kind baseKind) *derive.Key {
	return &derive.Key{Label: labelPrefix + kind.String(), Type: kind.ckk(), Len: kind.keyType().Len(),
		Sensitive: true, Derive: true, Sign: true, Verify: true, Encrypt: true, Decrypt: true, Wrap: true, Unwrap: true}
}

func errorf(format string, args ...any) error { return fmt.Errorf("probe: "+format, args...) }
