package derive

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// Logging (Config.Logger). Every record holds what an operator may read:
// the module's path, the token's label and serial, key labels, function
// and strategy names, call counts, durations and error texts, which never
// hold a PIN or key material (the secrets tests grep them). Nothing here
// runs without a logger: Derive takes the unlogged path then, with no
// allocation of its own.

// deriveLogged is Derive with a record of its outcome: Debug when it
// succeeds, Warn when it fails.
func (t *Token) deriveLogged(ctx context.Context, base *Key, r Request) (*Result, error) {
	start := time.Now()
	res, err := t.derive(ctx, base, r)
	d := time.Since(start)
	level := slog.LevelDebug
	if err != nil {
		level = slog.LevelWarn
	}
	if !t.log.Enabled(ctx, level) {
		return res, err
	}
	attrs := make([]slog.Attr, 0, 10)
	if base != nil {
		attrs = append(attrs, slog.String("base", base.Label))
	}
	if r.Function != nil {
		attrs = append(attrs, slog.String("function", r.Function.Name()))
	}
	attrs = append(attrs, slog.String("key_type", r.KeyType.String()))
	if err != nil {
		want := string(r.Strategy)
		if want == "" {
			want = "auto"
		}
		attrs = append(attrs, slog.String("strategy", want), slog.Duration("duration", d),
			slog.String("outcome", "error"), slog.String("error", strings.TrimPrefix(err.Error(), "p11derive: ")))
		t.log.LogAttrs(ctx, level, "p11derive: derivation failed", attrs...)
		return res, err
	}
	if res.Function != nil && (r.Function == nil || res.Function.Name() != r.Function.Name()) {
		attrs = append(attrs, slog.String("ran", res.Function.Name()))
	}
	attrs = append(attrs, slog.String("strategy", string(res.Strategy)), slog.Int("calls", res.Calls),
		slog.Duration("duration", d), slog.String("outcome", "ok"))
	if res.Key != nil && res.Key.Label != "" {
		attrs = append(attrs, slog.String("label", res.Key.Label))
	}
	if len(res.Warnings) > 0 {
		attrs = append(attrs, slog.Int("warnings", len(res.Warnings)))
	}
	t.log.LogAttrs(ctx, level, "p11derive: derived", attrs...)
	return res, err
}

// logOpened records an opened Token (Info), and its login (Debug).
func (t *Token) logOpened() {
	if t.log == nil {
		return
	}
	ctx := context.Background()
	t.log.LogAttrs(ctx, slog.LevelInfo, "p11derive: token opened",
		slog.String("module", t.mod.path), slog.Uint64("slot", uint64(t.slot)),
		slog.String("token", trimInfo(t.info.Label)), slog.String("serial", trimInfo(t.info.SerialNumber)),
		slog.Bool("login", t.pin != ""), slog.Bool("read_only", t.readOnly))
	if t.pin != "" {
		t.log.LogAttrs(ctx, slog.LevelDebug, "p11derive: logged in", slog.String("token", trimInfo(t.info.Label)))
	}
}

// logOpenFailed records an Open that failed (Warn).
func logOpenFailed(l *slog.Logger, module string, sel selector, err error) {
	if l == nil {
		return
	}
	l.LogAttrs(context.Background(), slog.LevelWarn, "p11derive: open failed",
		slog.String("module", module), slog.String("select", sel.String()),
		slog.String("error", strings.TrimPrefix(err.Error(), "p11derive: ")))
}

// logClosed records a closed Token (Debug).
func (t *Token) logClosed() {
	if t.log == nil {
		return
	}
	t.log.LogAttrs(context.Background(), slog.LevelDebug, "p11derive: token closed",
		slog.String("token", trimInfo(t.info.Label)))
}

// trimInfo is a CK_TOKEN_INFO string without its padding.
func trimInfo(s string) string { return strings.TrimRight(s, " \x00") }
