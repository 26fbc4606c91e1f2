package derive

import (
	"net/url"
	"strconv"
	"strings"

	pkcs11uri "github.com/stefanberger/go-pkcs11uri"
)

// A URI is an RFC 7512 PKCS#11 URI, parsed: the token it selects (Open
// uses these), the module, and the secret key it names (Open does not:
// a Token is not one key; pass Key to Token.Find).
//
// Values are percent-decoded (RFC 7512 §2.3): "object=My%20Key" is the
// label "My Key", "id=%01%a2" the CKA_ID bytes 01 a2.
type URI struct {
	// Token, Manufacturer, Model and Serial are the path attributes token,
	// manufacturer, model and serial: CK_TOKEN_INFO's fields.
	Token, Manufacturer, Model, Serial string
	// Slot is slot-id.
	Slot *uint
	// ModulePath is the query attribute module-path.
	ModulePath string
	// Key is object= (CKA_LABEL) and id= (CKA_ID): the key the URI names,
	// empty if it names none.
	Key Selector
}

// uriPath and uriQuery are the attributes ParseURI honours; uriUnsupported
// those of RFC 7512 it knows but refuses, with why. Any other attribute,
// vendor ones (x-…) included, is refused as unknown: an attribute that is
// ignored would select something the user did not ask for.
var (
	uriPath        = map[string]bool{"token": true, "manufacturer": true, "model": true, "serial": true, "slot-id": true, "object": true, "id": true, "type": true}
	uriQuery       = map[string]bool{"module-path": true}
	uriUnsupported = map[string]string{
		"pin-value":            "a PIN in the URI (pin-value) is refused: give it by environment variable or file",
		"pin-source":           "pin-source in the URI is not supported: give the PIN by environment variable or file",
		"module-name":          "module-name is not supported: give the module's path (module-path, or the module flag)",
		"library-manufacturer": "library-manufacturer is not supported: select the token by token, manufacturer, model, serial or slot-id",
		"library-description":  "library-description is not supported: select the token by token, manufacturer, model, serial or slot-id",
		"library-version":      "library-version is not supported: select the token by token, manufacturer, model, serial or slot-id",
		"slot-description":     "slot-description is not supported: select the token by token, manufacturer, model, serial or slot-id",
		"slot-manufacturer":    "slot-manufacturer is not supported: select the token by token, manufacturer, model, serial or slot-id",
	}
)

// ParseURI parses an RFC 7512 PKCS#11 URI. It refuses, as input errors
// (ErrInvalidInput), a URI that is malformed, a PIN in it, a type other
// than secret-key (p11derive selects secret keys only), and every
// attribute it would otherwise ignore: RFC 7512 attributes it does not
// support (library-*, slot-description, slot-manufacturer, module-name,
// pin-source) and unknown ones, each named in the error.
func ParseURI(s string) (*URI, error) {
	if !strings.HasPrefix(s, "pkcs11:") {
		return nil, inputErr("uri", "not a PKCS#11 URI: it does not start \"pkcs11:\"")
	}
	// The attribute names, checked before the library parses the values
	// (it keeps any name, and gives no way to list them).
	path, query, hasQuery := strings.Cut(s[len("pkcs11:"):], "?")
	rest, err := uriAttributes(path, query)
	if err != nil {
		return nil, err
	}
	rebuilt := "pkcs11:" + strings.Join(rest, ";")
	if hasQuery {
		rebuilt += "?" + query
	}
	p := pkcs11uri.New()
	if err := p.Parse(rebuilt); err != nil {
		return nil, inputErr("uri", "%v", err)
	}
	return uriFrom(p)
}

// uriAttributes checks the names of a URI's path and query attributes and
// its type=, and returns the path attributes but type= (which the library
// would refuse).
func uriAttributes(path, query string) (rest []string, err error) {
	// type= is read here: go-pkcs11uri v0.0.0-2023 refuses type=secret-key
	// (a typo in its pattern).
	var typ []string
	for _, part := range []struct {
		attrs, sep string
		known      map[string]bool
		where      string
	}{{path, ";", uriPath, "path"}, {query, "&", uriQuery, "query"}} {
		if part.attrs == "" {
			continue
		}
		for _, a := range strings.Split(part.attrs, part.sep) {
			name, v, _ := strings.Cut(a, "=")
			if part.where == "path" {
				if name == "type" {
					typ = append(typ, v)
					continue
				}
				rest = append(rest, a)
			}
			if why, ok := uriUnsupported[name]; ok {
				return nil, inputErr("uri", "%s", why)
			}
			if !part.known[name] {
				if uriPath[name] || uriQuery[name] {
					return nil, inputErr("uri", "%q is a %s attribute in the URI's %s", name, other(part.where), part.where)
				}
				return nil, inputErr("uri", "unknown %s attribute %q (p11derive knows token, manufacturer, model, serial, slot-id, object, id, type=secret-key and ?module-path=)", part.where, truncate(name, 40))
			}
		}
	}
	switch {
	case len(typ) > 1:
		return nil, inputErr("uri", "type= is given %d times", len(typ))
	case len(typ) == 1:
		v, err := url.PathUnescape(typ[0])
		if err != nil || v != "secret-key" {
			return nil, inputErr("uri", "type=%s: p11derive selects secret keys only (type=secret-key)", truncate(typ[0], 20))
		}
	}
	return rest, nil
}

// uriFrom is the URI the library parsed.
func uriFrom(p *pkcs11uri.Pkcs11URI) (*URI, error) {
	u := &URI{}
	for _, f := range []struct {
		dst  *string
		attr string
	}{{&u.Token, "token"}, {&u.Manufacturer, "manufacturer"}, {&u.Model, "model"}, {&u.Serial, "serial"}, {&u.Key.Label, "object"}} {
		if v, ok := p.GetPathAttribute(f.attr, false); ok {
			if v == "" {
				return nil, inputErr("uri", "%s= is empty", f.attr)
			}
			*f.dst = v
		}
	}
	if v, ok := p.GetPathAttribute("id", false); ok {
		if v == "" {
			return nil, inputErr("uri", "id= is empty")
		}
		u.Key.ID = []byte(v)
	}
	if v, ok := p.GetPathAttribute("slot-id", false); ok {
		id, err := strconv.ParseUint(v, 10, 0)
		if err != nil {
			return nil, inputErr("uri", "slot-id %q is not a number", truncate(v, 20))
		}
		slot := uint(id)
		u.Slot = &slot
	}
	if v, ok := p.GetQueryAttribute("module-path", false); ok {
		u.ModulePath = v
	}
	return u, nil
}

func other(where string) string {
	if where == "path" {
		return "query"
	}
	return "path"
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
