package main

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestVersionOf: the version line and JSON come from the build info the go
// command stamps: a release's module version, a clone's VCS revision.
func TestVersionOf(t *testing.T) {
	v := versionOf(&debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/p11derive/p11derive", Version: "v0.3.1"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "65e3ed9f00"}, {Key: "vcs.time", Value: "2025-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
		},
	})
	assert.Equal(t, "p11derive v0.3.1 (revision 65e3ed9f00 (modified), 2025-01-02T03:04:05Z, go1.26.0)", v.String())
	assert.Equal(t, 1, v.SchemaVersion)
	assert.True(t, v.Modified)

	d := versionOf(&debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/p11derive/p11derive", Version: "(devel)"}})
	assert.Equal(t, "p11derive (devel) (go1.26.0)", d.String())

	n := versionOf(nil)
	assert.Equal(t, "unknown", n.Version)
	assert.Equal(t, "github.com/p11derive/p11derive", n.Module)
}
