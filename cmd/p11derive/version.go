package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

const versionUsage = `usage: p11derive version [--json]
       p11derive --version

Prints the module version p11derive was built from (v1.2.3 for a release
installed with go install …@v1.2.3, "(devel)" for a build from a clone), the
VCS revision and time the go command stamped into the binary, whether the
work tree had changes, and the Go version. It reaches no token.

Flags:
`

// buildVersion is what the go command stamped into the binary.
type buildVersion struct {
	SchemaVersion int    `json:"schema_version"`
	Module        string `json:"module"`
	Version       string `json:"version"`
	Revision      string `json:"revision,omitempty"`
	Time          string `json:"time,omitempty"`
	Modified      bool   `json:"modified,omitempty"`
	Go            string `json:"go"`
}

// versionOf reads bi (runtime/debug.ReadBuildInfo's, or nil when the
// binary has none).
func versionOf(bi *debug.BuildInfo) buildVersion {
	v := buildVersion{SchemaVersion: schemaVersion, Module: "github.com/p11derive/p11derive", Version: "unknown", Go: runtime.Version()}
	if bi == nil {
		return v
	}
	if bi.Main.Path != "" {
		v.Module = bi.Main.Path
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

func (v buildVersion) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "p11derive %s", v.Version)
	var details []string
	if v.Revision != "" {
		r := "revision " + v.Revision
		if v.Modified {
			r += " (modified)"
		}
		details = append(details, r)
	}
	if v.Time != "" {
		details = append(details, v.Time)
	}
	details = append(details, v.Go)
	fmt.Fprintf(&b, " (%s)", strings.Join(details, ", "))
	return b.String()
}

func currentVersion() buildVersion {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return versionOf(bi)
}

func cmdVersion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the version as JSON")
	fs.Usage = func() { fmt.Fprint(fs.Output(), versionUsage); fs.PrintDefaults() }
	if err := parse(fs, args); err != nil {
		return err
	}
	v := currentVersion()
	if *asJSON {
		return printJSON(stdout, v)
	}
	_, err := fmt.Fprintln(stdout, v)
	return err
}
