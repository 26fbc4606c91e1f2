package derive

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/lab"
)

// records parses the JSON lines of a slog.JSONHandler.
func records(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

// TestLogger: with Config.Logger, Open, Close and every Derive are logged
// with their strategy, calls, duration and outcome; below the handler's
// level nothing is.
func TestLogger(t *testing.T) {
	l := lab.SoftHSM2(t)
	l.Setenv(t)
	var buf lab.LockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	tok, err := Open(Config{Module: l.Module, Slot: &l.SlotID, PIN: l.PIN, Logger: log})
	require.NoError(t, err)
	ctx := context.Background()
	lt := &labToken{kind: "softhsm2", lab: l, tok: tok}
	base := lt.importKey(t, pkcs11.CKK_AES, make([]byte, 16), pkcs11.NewAttribute(pkcs11.CKA_LABEL, "log-base"))
	r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: make([]byte, 16), KeyType: KeyAES128, Label: "log-dk"}
	res, err := tok.Derive(ctx, base, r)
	require.NoError(t, err)
	require.NoError(t, tok.Destroy(ctx, res.Key))
	_, err = tok.Derive(ctx, base, Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: make([]byte, 16),
		KeyType: KeyAES128, Strategy: MACUnwrap})
	require.Error(t, err)
	require.NoError(t, tok.Close())
	_, err = Open(Config{Module: l.Module, Label: "no-such-token", Logger: log})
	require.Error(t, err)

	recs := records(t, buf.String())
	var msgs []string
	for _, rec := range recs {
		msgs = append(msgs, rec["msg"].(string))
	}
	assert.Equal(t, []string{"p11derive: token opened", "p11derive: logged in", "p11derive: derived",
		"p11derive: derivation failed", "p11derive: token closed", "p11derive: open failed"}, msgs)
	opened := recs[0]
	assert.Equal(t, "INFO", opened["level"])
	assert.Equal(t, l.Module, opened["module"])
	assert.Equal(t, true, opened["login"])
	assert.Equal(t, "p11derive-lab", opened["token"])
	ok := recs[2]
	assert.Equal(t, "DEBUG", ok["level"])
	assert.Equal(t, "native", ok["strategy"])
	assert.Equal(t, "aes-ecb", ok["function"])
	assert.Equal(t, "log-base", ok["base"])
	assert.Equal(t, "log-dk", ok["label"])
	assert.Equal(t, float64(res.Calls), ok["calls"])
	assert.Equal(t, "ok", ok["outcome"])
	assert.Greater(t, ok["duration"], float64(0))
	assert.Equal(t, float64(1), ok["warnings"], "the zero block warns")
	failed := recs[3]
	assert.Equal(t, "WARN", failed["level"])
	assert.Equal(t, "mac-unwrap", failed["strategy"])
	assert.Equal(t, "error", failed["outcome"])
	assert.Contains(t, failed["error"], "mac-unwrap")
	assert.Equal(t, "WARN", recs[5]["level"])
	assert.Contains(t, recs[5]["error"], "no token with label")

	// At Warn, only failures.
	buf = lab.LockedBuffer{}
	l2 := lab.SoftHSM2(t)
	l2.Setenv(t)
	tok, err = Open(Config{Module: l2.Module, Slot: &l2.SlotID, PIN: l2.PIN,
		Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	require.NoError(t, err)
	defer tok.Close()
	lt = &labToken{kind: "softhsm2", lab: l2, tok: tok}
	base = lt.importKey(t, pkcs11.CKK_AES, make([]byte, 16))
	res, err = tok.Derive(ctx, base, r)
	require.NoError(t, err)
	require.NoError(t, tok.Destroy(ctx, res.Key))
	assert.Empty(t, buf.String())
}

// TestNilLoggerCostsNothing: without a logger, Derive allocates exactly
// what the unlogged derivation does (the hot path's budget is the
// performance work's, not the logger's).
func TestNilLoggerCostsNothing(t *testing.T) {
	lt := tokens(t)[1] // NSS softoken: the fastest token, where allocations show
	ctx := context.Background()
	base := lt.importKey(t, pkcs11.CKK_AES, lab.Random(t, 16))
	r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: lab.Random(t, 16), KeyType: KeyAES128, Strategy: Native}
	allocs := func(derive func(context.Context, *Key, Request) (*Result, error)) float64 {
		return testing.AllocsPerRun(200, func() {
			res, err := derive(ctx, base, r)
			if err != nil {
				t.Fatal(err)
			}
			if err := lt.tok.Destroy(ctx, res.Key); err != nil {
				t.Fatal(err)
			}
		})
	}
	require.Nil(t, lt.tok.log)
	unlogged := allocs(lt.tok.derive)
	public := allocs(lt.tok.Derive)
	t.Logf("allocations per derivation and destruction: Derive %v, unlogged %v", public, unlogged)
	assert.LessOrEqual(t, public, unlogged)
}
