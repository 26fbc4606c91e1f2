package arch

import (
	"encoding/json"
	"io"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/p11derive/p11derive/"

// allowed lists, for each package of the module, the packages of the module
// its non-test files may import. A package missing here fails the test:
// a new package takes its place on the map first.
var allowed = map[string][]string{
	"internal/ckm":             {},
	"internal/ck":              {},
	"mechanisms":               {},
	"internal/ref":             {},
	"internal/arch":            {},
	"derive":                   {"internal/ck", "internal/ckm", "mechanisms"},
	"derive/scheme":            {"derive", "internal/ckm", "mechanisms"},
	"derive/internal/chain":    {"derive", "derive/scheme"},
	"derive/emv":               {"derive", "derive/scheme", "derive/internal/chain", "internal/ckm"},
	"derive/gp":                {"derive", "derive/scheme", "derive/internal/chain", "internal/ckm"},
	"derive/an10922":           {"derive", "derive/scheme", "derive/internal/chain"},
	"derive/dukpt":             {"derive", "derive/scheme", "derive/internal/chain", "internal/ckm"},
	"derive/tr31":              {"derive", "derive/scheme", "derive/internal/chain", "internal/ckm"},
	"derive/c11":               {"derive"},
	"derive/scheme/verify":     {"derive", "derive/scheme", "derive/emv", "derive/gp", "derive/an10922", "derive/dukpt", "derive/tr31", "internal/ckm", "internal/ref"},
	"probe":                    {"derive", "internal/ckm", "internal/ref"},
	"internal/batch":           {"derive", "derive/scheme"},
	"cmd/p11derive":            {"derive", "derive/scheme", "derive/emv", "derive/gp", "derive/an10922", "derive/dukpt", "derive/tr31", "derive/scheme/verify", "probe", "internal/batch"},
	"examples/choose-strategy": {"derive"},
	"examples/derive-dk":       {"derive"},
	"examples/device-keys":     {"derive"},
	"examples/emv-card-key":    {"derive"},

	// Test rigs.
	"internal/lab":               {"internal/ckm"},
	"internal/fwd":               {"internal/lab"},
	"internal/cabi":              {},
	"internal/kwref":             {},
	"internal/labtok":            {"derive", "internal/lab"},
	"derive/internal/schemetest": {},
	"internal/baseline":          {"internal/ck"},
}

// rigs may be imported by test files (and by other rigs) only.
var rigs = map[string]bool{
	"internal/lab": true, "internal/fwd": true, "internal/cabi": true,
	"internal/kwref": true, "derive/internal/schemetest": true, "internal/baseline": true,
	"internal/labtok": true,
}

// cgo lists the packages that may use cgo.
var cgo = map[string]bool{
	"internal/ck": true, "mechanisms": true,
	"internal/lab": true, "internal/fwd": true, "internal/cabi": true, "internal/baseline": true,
}

type pkg struct {
	ImportPath     string
	Dir            string
	Imports        []string
	GoFiles        []string
	CgoFiles       []string
	IgnoredGoFiles []string // build-constrained out on this machine
}

func list(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestArrows checks every import between the module's packages against the
// map, and that only the call path, mechanisms and the rigs use cgo.
func TestArrows(t *testing.T) {
	pkgs := list(t)
	if len(pkgs) < len(allowed)/2 {
		t.Fatalf("go list found %d packages: is the module there?", len(pkgs))
	}
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.ImportPath, module)
		ok, known := allowed[name]
		if !known {
			t.Errorf("%s is not on the map (internal/arch): add it to its layer", name)
			continue
		}
		may := map[string]bool{}
		for _, a := range ok {
			may[a] = true
		}
		var bad []string
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			if !may[dep] || (rigs[dep] && !rigs[name]) {
				bad = append(bad, dep)
			}
		}
		sort.Strings(bad)
		if len(bad) > 0 {
			t.Errorf("%s imports %s, against the map", name, strings.Join(bad, ", "))
		}
		if len(p.CgoFiles) > 0 && !cgo[name] {
			t.Errorf("%s uses cgo (%s): only internal/ck, mechanisms and the test rigs may", name, strings.Join(p.CgoFiles, ", "))
		}
	}
}
