package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// readmeBlock returns the first fenced block of language lang after the
// heading in README.md, exactly as printed.
func readmeBlock(t *testing.T, readme, heading, lang string) string {
	t.Helper()
	i := strings.Index(readme, "\n"+heading+"\n")
	require.GreaterOrEqual(t, i, 0, "README.md has no heading %q", heading)
	rest := readme[i:]
	open := strings.Index(rest, "\n```"+lang+"\n")
	require.GreaterOrEqual(t, open, 0, "no ```%s block after %q", lang, heading)
	body := rest[open+len("\n```"+lang+"\n"):]
	end := strings.Index(body, "\n```\n")
	require.GreaterOrEqual(t, end, 0, "unterminated ```%s block after %q", lang, heading)
	return body[:end+1]
}

// TestREADME runs the README's shell walk-through and its Go program
// exactly as printed, on a throwaway SoftHSM2 token labelled "payments"
// with user PIN 1234, reached through the system's SoftHSM2 module (as the
// README says) with SOFTHSM2_CONF pointing at the token. The walk-through
// runs in bash, with this test binary as p11derive on PATH; the Go program
// runs with go run in a module of its own that replaces
// github.com/p11derive/p11derive with this repository, offline.
func TestREADME(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	readme := string(b)
	shell := readmeBlock(t, readme, "## Use it from the shell", "sh")
	program := readmeBlock(t, readme, "## Use it from Go", "go")
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)

	tok := lab.SoftHSM2(t, lab.TokenLabel("payments"))
	require.Equal(t, "1234", tok.PIN, "the README's PIN")
	const module = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(module); err != nil {
		t.Fatalf("the README's module %s: %v (Debian package softhsm2)", module, err)
	}
	require.Contains(t, shell, "P11DERIVE_MODULE="+module)
	require.Contains(t, program, `"`+module+`"`)

	// In a subtest, which returns when the (parallel) script is done.
	t.Run("shell", func(t *testing.T) {
		testscript.Run(t, testscript.Params{
			Setup: func(env *testscript.Env) error {
				for _, kv := range tok.Env {
					k, v, _ := strings.Cut(kv, "=")
					env.Setenv(k, v)
				}
				env.Setenv("GORACE", "atexit_sleep_ms=0")
				env.Setenv("BASH", bash)
				return os.WriteFile(filepath.Join(env.WorkDir, "walk.sh"), []byte("set -euo pipefail -x\n"+shell), 0o600)
			},
			Files: []string{writeScript(t, `# The README's shell walk-through, as printed.
exec $BASH walk.sh
stdout '^[0-9a-f]{6}\n\z'
stderr '\+ p11derive kcv +--token payments --key DK'
! stderr 'p11derive [a-z]+: '
`)},
		})
	})
	if t.Failed() {
		return
	}

	// The Go program, in a module of its own.
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	dir := t.TempDir()
	sum, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	require.NoError(t, err)
	gomod := "module readme\n\ngo 1.26\n\nrequire github.com/p11derive/p11derive v0.0.0\n\nreplace github.com/p11derive/p11derive => " + repo + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o600))
	args := []string{"run"}
	if raceEnabled {
		args = append(args, "-race") // the packages this test binary's build left in the cache
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), tok.Env...)
	cmd.Env = append(cmd.Env, "P11DERIVE_PIN=1234", "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off", "CGO_ENABLED=1",
		"GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go run of the README's Go program:\n%s", out)
	t.Logf("go run: %s", out)
	require.Regexp(t, regexp.MustCompile(`^DK: aes-ecb by native in [0-9]+ calls, sensitive=true, check value [0-9a-f]{6}\n\z`), string(out))
}

// writeScript writes a testscript file for testscript.Params.Files.
func writeScript(t *testing.T, script string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "readme.txtar")
	require.NoError(t, os.WriteFile(p, []byte(script), 0o600))
	return p
}
