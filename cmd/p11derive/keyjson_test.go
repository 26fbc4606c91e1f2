package main

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/probe"
)

// keyFields are the fields of the key object that every key has (those
// not omitted when empty), by keyJSON's tags.
func keyFields() []string {
	var names []string
	typ := reflect.TypeOf(keyJSON{})
	for i := 0; i < typ.NumField(); i++ {
		tag := typ.Field(i).Tag.Get("json")
		if name, opts, _ := strings.Cut(tag, ","); !strings.Contains(opts, "omitempty") {
			names = append(names, name)
		}
	}
	return names
}

// TestKeyJSONShape: every command that prints a key prints the same key
// object (keyJSON's fields, no handle) in a document with schema_version,
// and the probe's key report gives the fields it shares with it the same
// names and values. Run on NSS softoken's key database (the commands run
// in this process).
func TestKeyJSONShape(t *testing.T) {
	tok := lab.NSSDB(t)
	tf := []string{"--module", tok.Module, "--init-args", tok.InitArgs, "--slot", strconv.FormatUint(uint64(tok.SlotID), 10)}
	if tok.Login {
		t.Setenv("P11DERIVE_PIN", tok.PIN)
	} else {
		t.Setenv("P11DERIVE_PIN", "")
	}
	label := lab.UniqueLabel("shape")
	id := "0a0b" + strconv.Itoa(len(label))
	cmd := func(args ...string) map[string]any {
		t.Helper()
		n := 1 // the token flags after the command's name (and the scheme's)
		if args[0] == "scheme" {
			n = 2
		}
		code, out, stderr := runCmd(append(append(args[:n:n], tf...), args[n:]...)...)
		require.Equal(t, 0, code, "p11derive %s: %s", strings.Join(args, " "), stderr)
		var doc map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &doc), out)
		if args[0] != "probe" { // the probe report has its own version
			assert.Equal(t, float64(schemaVersion), doc["schema_version"], "p11derive %s", args[0])
		}
		return doc
	}
	keygen := cmd("keygen", "--label", label, "--id", id, "--key-type", "aes", "--len", "16", "--usage", "derive,encrypt")
	des := cmd("keygen", "--label", label+"-des3", "--key-type", "des3", "--usage", "derive,encrypt")
	defer runCmd(append(append([]string{"destroy"}, tf...), "--key", label+"-des3", "--yes")...)
	derived := cmd("derive", "--base-id", id, "--kdf", "aes-ecb", "--data", "6bc1bee22e409f96e93d7e117393172a", "--key-type", "aes", "--len", "16", "--id", "d1")
	kcv := cmd("kcv", "--key", label, "--json")
	keys := cmd("keys", "--key", label, "--json")
	single := cmd("scheme", "dukpt-ik", "--base", label, "--ikid", "1234567890123456")
	multi := cmd("scheme", "gp-div", "--base", label+"-des3", "--method", "emv", "--kdd", "00010203040506070809")
	probed := cmd("probe", "--list-only", "--kdf", "aes-ecb", "--id", id, "--json")
	destroyed := cmd("destroy", "--key", label, "--id", id, "--yes", "--json")

	objects := map[string]map[string]any{"keygen": keygen, "keygen des3": des, "derive": derived, "kcv --json": kcv, "scheme dukpt-ik": single}
	for name, doc := range map[string]map[string]any{"keys": keys, "destroy": destroyed} {
		list := doc["keys"].([]any)
		require.Len(t, list, 1, name)
		objects[name] = list[0].(map[string]any)
	}
	require.Equal(t, "gp-div emv", multi["scheme"])
	for n, o := range multi["keys"].(map[string]any) {
		objects["scheme gp-div "+n] = o.(map[string]any)
	}
	require.Len(t, objects, 10)
	for name, o := range objects {
		for _, f := range keyFields() {
			assert.Contains(t, o, f, "%s: the key object lacks %s", name, f)
		}
		assert.NotContains(t, o, "handle", name)
	}
	// One key, the same object whichever command printed it.
	for _, name := range []string{"kcv --json", "keys"} {
		o := objects[name]
		for _, f := range []string{"label", "id", "key_type", "len", "kcv", "kcv_method", "sensitive", "extractable", "token_object", "usages"} {
			assert.Equal(t, keygen[f], o[f], "%s: %s", name, f)
		}
	}
	assert.Equal(t, id, keygen["id"])
	assert.Equal(t, "d1", derived["id"])
	assert.Equal(t, "aes-ecb", derived["kdf"])

	// The probe's key report: its own schema version, the shared fields
	// named and valued as the key object's.
	assert.Equal(t, float64(probe.SchemaVersion), probed["schema_version"])
	pk := probed["key"].(map[string]any)
	for _, f := range []string{"label", "id", "key_type", "len", "token_object", "usages"} {
		assert.Equal(t, objects["keys"][f], pk[f], "probe key report: %s", f)
	}
}
