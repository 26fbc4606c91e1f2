package probe

import (
	"context"
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
}

// labelPrefix marks the probe's session objects.
const labelPrefix = "p11derive-probe-"

// makeBaseKey imports a session key of the kind's known value or, if the
// token refuses (or noImport), generates one in the token. It returns a
// baseKey with key nil when neither worked.
func makeBaseKey(ctx context.Context, tok *derive.Token, kind baseKind, noImport bool) *baseKey {
	bk := &baseKey{kind: kind, info: BaseKey{Type: kind.String()}}
	label := labelPrefix + kind.String()
	var importErr error
	if !noImport {
		k, err := tok.Import(ctx, derive.KeySpec{Label: label, Type: kind.keyType(), Usage: importUsage(kind)}, baseValues[kind])
		if err == nil {
			bk.key, bk.value, bk.info.Source = k, baseValues[kind], "imported"
			return bk
		}
		importErr = err
		bk.info.ImportCKR = ckrName(importErr)
	}
	usage := derive.UseDerive | derive.UseSign | derive.UseUnwrap | derive.UseEncrypt
	if kind == baseGeneric {
		usage = derive.UseDerive | derive.UseSign
	}
	k, err := tok.GenerateKey(ctx, label, kind.keyType(), usage, false)
	if err == nil {
		bk.key, bk.info.Source = k, "generated"
		if importErr != nil {
			bk.info.Reason = "the token refused to import a key of known value: " + trim(importErr)
		}
		return bk
	}
	bk.info.Source = "none"
	var why []string
	if importErr != nil {
		why = append(why, "import: "+trim(importErr))
	}
	why = append(why, "generate: "+trim(err))
	bk.info.Reason = strings.Join(why, "; ")
	return bk
}

// importUsage is what the probe's imported keys of a kind may do: derive,
// MAC, unwrap and encrypt (generic secrets: derive and MAC), sensitive and
// not extractable like a real base key.
func importUsage(kind baseKind) derive.Usage {
	if kind == baseGeneric {
		return derive.UseDerive | derive.UseSign
	}
	return derive.UseDerive | derive.UseSign | derive.UseEncrypt | derive.UseUnwrap
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
