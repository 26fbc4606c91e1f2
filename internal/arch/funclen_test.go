package arch

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// maxFuncLines is the most lines a non-test function of the module may
// have, from its func keyword to its closing brace: a screen or two, what
// a reader can hold (issue 16).
const maxFuncLines = 100

// longFuncs are the functions allowed over maxFuncLines for now, by
// package, file and name ("Type.Method" for methods). Only functions of
// package derive (and its subpackages), which other engineers are
// splitting, belong here, each one that was on main over the limit when
// the test came; the test fails when one of them is back under the limit,
// so that the list only shrinks. Everything else over the limit fails.
//
// Empty: on main at 26f9f95, when this branch was rebased, no function of
// derive was over the limit (the longest, streamUnwrap.run in
// derive/streamunwrap.go, is exactly 100 lines). An entry reads
// "derive/streamunwrap.go: streamUnwrap.run": true.
var longFuncs = map[string]bool{}

// TestFuncLength fails for every non-test function of the module longer
// than maxFuncLines, listing them longest first.
func TestFuncLength(t *testing.T) {
	pkgs := list(t)
	if len(pkgs) < len(allowed)/2 {
		t.Fatalf("go list found %d packages: is the module there?", len(pkgs))
	}
	fset := token.NewFileSet()
	type long struct {
		name  string
		lines int
	}
	var over []long
	seen := map[string]bool{}
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, module)
		files := append(append(append([]string{}, p.GoFiles...), p.CgoFiles...), p.IgnoredGoFiles...)
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") || !strings.HasSuffix(file, ".go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, file), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Errorf("%s/%s: %v", rel, file, err)
				continue
			}
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				n := fset.Position(fd.End()).Line - fset.Position(fd.Pos()).Line + 1
				if n <= maxFuncLines {
					continue
				}
				name := rel + "/" + file + ": " + funcName(fd)
				seen[name] = true
				if !longFuncs[name] {
					over = append(over, long{name, n})
				}
			}
		}
	}
	sort.Slice(over, func(i, j int) bool { return over[i].lines > over[j].lines })
	for _, l := range over {
		t.Errorf("%s is %d lines, over %d: split it", l.name, l.lines, maxFuncLines)
	}
	var stale []string
	for name := range longFuncs {
		if !seen[name] {
			stale = append(stale, name)
		}
	}
	sort.Strings(stale)
	for _, name := range stale {
		t.Errorf("%s is on longFuncs but no longer over %d lines (or gone): take it off the list", name, maxFuncLines)
	}
}

// funcName is fd's name, "Type.Method" for a method.
func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fmt.Sprintf("%T.%s", t, fd.Name.Name)
}
