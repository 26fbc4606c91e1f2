package derive

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// ProfileVersion is the version of the Profile format this package writes
// and reads.
const ProfileVersion = 1

// A Profile records the function a derivation computed, with its
// parameters, the output key type and the strategy that ran, so that the
// same keys can be derived again later — on this token after an upgrade, or
// on another token. Deriving from a profile computes exactly its function
// or fails: never a substitute. (Any strategy that computes the function
// gives the same key, so the strategy is recorded, not required.)
//
// Its JSON form is small and stable:
//
//	{"version": 1, "kdf": "aes-cbc", "strategy": "native",
//	 "key_type": "aes", "len": 16, "params": {"iv": "000102…0f"}}
//
// kdf is a function name as accepted by ParseFunction and the p11derive
// command's --kdf flag; params holds the function's parameters as strings
// (byte strings in hex), under the names of the command's flags: "iv";
// "prf", "layout", "feedback-iv" (SP 800-108); "hash", "salt", "mode"
// (HKDF). The derivation data is not part of a profile.
type Profile struct {
	Version  int               `json:"version"`
	KDF      string            `json:"kdf"`
	Strategy Strategy          `json:"strategy,omitempty"`
	KeyType  string            `json:"key_type"`
	Len      int               `json:"len"`
	Params   map[string]string `json:"params,omitempty"`
}

// Profile returns the profile of the derivation that made r.
func (r *Result) Profile() Profile {
	p := Profile{Version: ProfileVersion, KDF: r.Function.Name(), Strategy: r.Strategy,
		KeyType: r.KeyType.name(), Len: r.KeyType.n}
	r.Function.profile(&p)
	return p
}

func (p *Profile) set(key string, value string) {
	if p.Params == nil {
		p.Params = map[string]string{}
	}
	p.Params[key] = value
}

func (p *Profile) setHex(key string, b []byte) {
	if len(b) > 0 {
		p.set(key, hex.EncodeToString(b))
	}
}

// Request returns a request for data that computes exactly the profile's
// function into a key of the profile's type, with no substitute allowed.
// The caller adds the label, persistence and usage it wants.
func (p Profile) Request(data []byte) (Request, error) {
	if p.Version != ProfileVersion {
		return Request{}, inputErr("profile", "version %d is not supported (this p11derive reads version %d)", p.Version, ProfileVersion)
	}
	f, err := ParseFunction(p.KDF, p.Params)
	if err != nil {
		return Request{}, err
	}
	kt, err := ParseKeyType(p.KeyType, p.Len)
	if err != nil {
		return Request{}, err
	}
	return Request{Function: f, Data: data, KeyType: kt}, nil
}

// ParseProfile decodes a profile's JSON form, refusing unknown fields.
func ParseProfile(b []byte) (Profile, error) {
	var p Profile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Profile{}, inputErr("profile", "%v", err)
	}
	if _, err := p.Request(nil); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// parser makes a function from its name and parameters.
type parser func(name string, params map[string]string) (Function, error)

var (
	parsersMu sync.RWMutex
	parsers   = map[string]parser{}
)

// register makes ParseFunction know the function names.
func register(p parser, names ...string) {
	parsersMu.Lock()
	defer parsersMu.Unlock()
	for _, n := range names {
		parsers[n] = p
	}
}

// FunctionNames lists the names ParseFunction knows.
func FunctionNames() []string {
	parsersMu.RLock()
	defer parsersMu.RUnlock()
	var names []string
	for n := range parsers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ParseFunction returns the function with the given name and parameters,
// the names and parameters of the p11derive command's --kdf flag and of
// profiles: "aes-ecb", "aes-cbc" with params["iv"] in hex, and so on (see
// FunctionNames). Unknown parameters are refused.
func ParseFunction(name string, params map[string]string) (Function, error) {
	parsersMu.RLock()
	p := parsers[strings.ToLower(name)]
	parsersMu.RUnlock()
	if p == nil {
		return nil, inputErr("kdf", "unknown function %q (known: %s)", name, strings.Join(FunctionNames(), ", "))
	}
	return p(strings.ToLower(name), params)
}

// ParseAllow parses a comma-separated list of substitute function names
// (the p11derive command's --allow) that share one set of parameters: each
// function takes the parameters it knows and ignores the others.
func ParseAllow(list string, params map[string]string) ([]Function, error) {
	var out []Function
	for _, name := range strings.Split(list, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		parsersMu.RLock()
		p := parsers[name]
		parsersMu.RUnlock()
		if p == nil {
			return nil, inputErr("allow", "unknown function %q (known: %s)", name, strings.Join(FunctionNames(), ", "))
		}
		f, err := p(name, lenient(params))
		if err != nil {
			return nil, fmt.Errorf("p11derive: --allow %s: %w", name, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// lenient marks a parameter map whose unused entries are not an error.
func lenient(m map[string]string) map[string]string {
	c := make(map[string]string, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	c[lenientKey] = "1"
	return c
}

const lenientKey = "\x00lenient"

// params reads a function's parameters, refusing unknown ones.
type params struct {
	name string
	m    map[string]string
	used map[string]bool
}

func newParams(name string, m map[string]string) *params {
	return &params{name: name, m: m, used: map[string]bool{}}
}

func (p *params) str(key string) string {
	p.used[key] = true
	return p.m[key]
}

func (p *params) hex(key string) ([]byte, error) {
	s := strings.ReplaceAll(p.str(key), " ", "")
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, inputErr(key, "not hex: %v", err)
	}
	return b, nil
}

// done refuses parameters the function does not take.
func (p *params) done() error {
	if p.m[lenientKey] != "" {
		return nil
	}
	var extra []string
	for k, v := range p.m {
		if !p.used[k] && v != "" {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return inputErr(extra[0], "%s takes no %s", p.name, strings.Join(extra, ", "))
	}
	return nil
}

func cipherByName(s string) (Cipher, error) {
	switch s {
	case "aes":
		return AES, nil
	case "des3":
		return DES3, nil
	case "des":
		return DES, nil
	}
	return 0, fmt.Errorf("unknown cipher %q", s)
}
