package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON (the versioned schema of the
// package documentation).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// displayName is a function with the parameters that tell its variants
// apart (the fixed IVs and salts are left out: the JSON has them).
func displayName(kdf string, params map[string]string) string {
	var extra []string
	for _, k := range []string{"prf", "hash", "mode", "layout"} {
		if v := params[k]; v != "" {
			extra = append(extra, v)
		}
	}
	if len(extra) == 0 {
		return kdf
	}
	return kdf + " " + strings.Join(extra, " ")
}

func duration(ns int64) string {
	if ns == 0 {
		return "-"
	}
	d := time.Duration(ns)
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(time.Millisecond).String()
}

// note is a result's one-line explanation for the tables.
func (res *Result) note() string {
	var parts []string
	if res.CKR != "" {
		c := res.CKR
		if res.Call != "" {
			c = res.Call + ": " + c
		}
		parts = append(parts, c)
	}
	switch {
	case strings.HasPrefix(res.Reason, "wrong result"):
		parts = append(parts, "wrong result")
	case res.CKR == "" && res.Reason != "":
		parts = append(parts, res.Reason)
	}
	if res.Status == Failed || res.Status == Unavailable || res.Status == Error {
		for _, m := range res.Mechanisms {
			if m.Flag != nil && !*m.Flag && !strings.Contains(res.Reason, m.Name+" without CKF_") {
				parts = append(parts, m.Name+" lacks "+m.Lacks)
			}
		}
	}
	for _, m := range res.Mechanisms {
		if !m.Listed && (res.Status == Verified || res.Status == Ran) {
			parts = append(parts, "runs "+m.Name+" without listing it")
		}
		if m.Listed && m.Flag != nil && !*m.Flag && (res.Status == Verified || res.Status == Ran) {
			parts = append(parts, "runs "+m.Name+" without "+m.Lacks)
		}
	}
	return strings.Join(parts, "; ")
}

func (res *Result) calls() string {
	if res.Calls == 0 {
		return "-"
	}
	return fmt.Sprint(res.Calls)
}

func (t TokenInfo) title() string {
	return strings.TrimSpace(t.Manufacturer + " " + t.Model)
}

// summary counts results by status.
func (r *Report) summary() string {
	n := map[Status]int{}
	for _, res := range r.Results {
		n[res.Status]++
	}
	var parts []string
	for _, s := range []Status{Verified, Ran, Listed, Failed, Unavailable, Error} {
		if n[s] > 0 {
			word := string(s)
			if s == Error && n[s] > 1 {
				word = "errors"
			}
			parts = append(parts, fmt.Sprintf("%d %s", n[s], word))
		}
	}
	out := strings.Join(parts, ", ")
	if r.Incomplete {
		out += "; INCOMPLETE: the module or a session failed (errors), so this report does not say what the token can do"
	}
	return out
}

func baseKeys(v Verification) string {
	var parts []string
	for _, b := range v.BaseKeys {
		s := b.Type + " " + b.Source
		if len(b.Usage) > 0 {
			s += " [" + strings.Join(b.Usage, ",") + "]"
		}
		if b.ImportCKR != "" {
			s += " (import refused: " + b.ImportCKR + ")"
		}
		if b.GenerateCKR != "" {
			s += " (generation refused: " + b.GenerateCKR + ")"
		}
		if b.Session != "" {
			s += " (in a " + b.Session + " session)"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// WriteText writes the report as tables for people.
func (r *Report) WriteText(w io.Writer) error {
	t := r.Token
	fmt.Fprintf(w, "Token:        %q, %s (serial %s, firmware %s, hardware %s), slot %d\n", t.Label, t.title(), t.Serial, t.Firmware, t.Hardware, t.Slot)
	fmt.Fprintf(w, "Module:       %s %s, %s, PKCS#11 %s\n", t.Module.Description, t.Module.Version, t.Module.Manufacturer, t.Module.PKCS11Version)
	fmt.Fprintf(w, "Session:      %s; token flags: %s\n", t.Session, strings.Join(t.Flags, ", "))
	fmt.Fprintf(w, "Verification: %s; base keys: %s\n", r.Verification.Method, baseKeys(r.Verification))
	fmt.Fprintf(w, "Results:      %s (%d ms)\n\n", r.summary(), r.DurationMS)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tSTRATEGY\tSTATUS\tVERIFIED BY\tCALLS\tMEDIAN\tBASE KEY NEEDS\tNOTE")
	for i := range r.Results {
		res := &r.Results[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", displayName(res.KDF, res.Params), res.Strategy, res.Status,
			res.VerifiedBy, res.calls(), duration(res.MedianNS), strings.Join(res.Needs, ","), res.note())
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nMechanisms:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MECHANISM\tGROUP\tLISTED\tFLAGS\tKEY SIZES")
	for _, m := range r.Mechanisms {
		listed := "no"
		if m.Listed {
			listed = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Group, listed, strings.Join(m.Flags, ","), keySizes(m))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Key != nil {
		return r.Key.writeText(w)
	}
	return nil
}

func keySizes(m Mechanism) string {
	if m.InfoCKR != "" {
		return "info: " + m.InfoCKR
	}
	if m.MinKeySize == 0 && m.MaxKeySize == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", m.MinKeySize, m.MaxKeySize)
}

func (k *KeyReport) attrs(v bool) string {
	var names []string
	for n, b := range k.Attributes {
		if b == v {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (u UnwrapTemplate) String() string {
	switch u.State {
	case "present":
		var parts []string
		for n, v := range u.Attributes {
			parts = append(parts, n+"="+v)
		}
		sort.Strings(parts)
		return "present: " + strings.Join(parts, ", ")
	case "absent":
		if u.Reason != "" {
			return "absent (" + u.Reason + ")"
		}
		return "absent"
	}
	return u.State + ": " + u.Reason
}

func (k *KeyReport) writeText(w io.Writer) error {
	fmt.Fprintf(w, "\nKey %q: %s, %d bytes, token object %v\n", k.Label, k.Type, k.Len, k.TokenObject)
	fmt.Fprintf(w, "  true:  %s\n  false: %s\n", k.attrs(true), k.attrs(false))
	fmt.Fprintf(w, "  unwrap template: %s\n", k.UnwrapTemplate)
	fmt.Fprintf(w, "  MAC-unwrap safe: %v\n", k.MACUnwrapSafe)
	for _, x := range k.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", x)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FUNCTION\tSTRATEGY\tUSABLE\tSET TO TRUE\tON THIS TOKEN\tNOTE")
	for _, u := range k.Uses {
		ts := string(u.TokenStatus)
		if ts == "" {
			ts = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", displayName(u.KDF, u.Params), u.Strategy, u.Usable, strings.Join(u.Set, ","), ts, oneLine(u.note(), 100))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range k.Notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
	return nil
}

func (u KeyUse) note() string {
	if u.ProbedWith == "" {
		return u.Reason
	}
	p := "probed with a " + u.ProbedWith + " key"
	if u.Reason == "" {
		return p
	}
	return u.Reason + " (" + p + ")"
}

func oneLine(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

// md escapes a table cell.
func md(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}

func code(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}

// WriteMarkdown writes the report as a Markdown page, for publishing what
// a token can derive.
func (r *Report) WriteMarkdown(w io.Writer) error {
	t := r.Token
	title := t.title()
	if title == "" {
		title = t.Label
	}
	fmt.Fprintf(w, "# %s: in-token key derivation\n\n", md(title))
	fmt.Fprintf(w, "What this token computes inside itself, as measured by `p11derive probe` on %s (schema %d).\n\n", r.Time, r.SchemaVersion)
	fmt.Fprintln(w, "| | |\n|---|---|")
	for _, row := range [][2]string{
		{"Token label", t.Label}, {"Manufacturer", t.Manufacturer}, {"Model", t.Model}, {"Serial", t.Serial},
		{"Firmware", t.Firmware}, {"Hardware", t.Hardware},
		{"Module", strings.TrimSpace(t.Module.Description + " " + t.Module.Version + ", " + t.Module.Manufacturer)},
		{"PKCS#11 version", t.Module.PKCS11Version}, {"Session", t.Session},
		{"Verification", r.Verification.Method + " (" + baseKeys(r.Verification) + ")"},
		{"Results", r.summary()},
	} {
		fmt.Fprintf(w, "| %s | %s |\n", row[0], md(row[1]))
	}

	fmt.Fprint(w, "\n## Derivations\n\n")
	fmt.Fprintln(w, "| Function | Strategy | Status | Verified by | Calls | Median | Base key needs | Note |")
	fmt.Fprintln(w, "|---|---|---|---|---:|---:|---|---|")
	for i := range r.Results {
		res := &r.Results[i]
		status := string(res.Status)
		if res.Status == Verified {
			status = "**verified**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", code(displayName(res.KDF, res.Params)), code(res.Strategy),
			status, res.VerifiedBy, res.calls(), duration(res.MedianNS), md(strings.Join(res.Needs, ", ")), md(res.note()))
	}
	fmt.Fprintln(w, "\nStatus: **verified** ran and gave the right key (known answer with an imported test key, or")
	fmt.Fprintln(w, "cross-check between strategies); *ran* ran but could not be checked; *listed* listed but not run;")
	fmt.Fprintln(w, "*failed* listed (or not) and failed at call time, or gave a wrong key; *unavailable* not listed and")
	fmt.Fprintln(w, "refused, or not computable; *error* the module or session failed, so nothing was learnt (the report is")
	fmt.Fprintln(w, "incomplete). Calls are PKCS#11 calls per derivation; the median is the wall time of one.")

	fmt.Fprint(w, "\n## Mechanisms\n\n")
	fmt.Fprintln(w, "| Mechanism | Group | Listed | Flags | Key sizes |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, m := range r.Mechanisms {
		listed := "no"
		if m.Listed {
			listed = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", code(m.Name), m.Group, listed, strings.Join(m.Flags, ", "), md(keySizes(m)))
	}
	if k := r.Key; k != nil {
		fmt.Fprintf(w, "\n## Key %s\n\n", code(k.Label))
		fmt.Fprintf(w, "%s, %d bytes, token object: %v. True: %s. False: %s.\n\n", k.Type, k.Len, k.TokenObject, md(k.attrs(true)), md(k.attrs(false)))
		fmt.Fprintf(w, "Unwrap template: %s. MAC-unwrap safe: %v.\n\n", md(k.UnwrapTemplate.String()), k.MACUnwrapSafe)
		for _, x := range k.Warnings {
			fmt.Fprintf(w, "**Warning:** %s.\n\n", md(x))
		}
		fmt.Fprintln(w, "| Function | Strategy | Usable | Set to true | On this token | Note |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|")
		for _, u := range k.Uses {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", code(displayName(u.KDF, u.Params)), code(u.Strategy), u.Usable,
				md(strings.Join(u.Set, ", ")), u.TokenStatus, md(u.note()))
		}
		for _, n := range k.Notes {
			fmt.Fprintf(w, "\n> %s\n", md(n))
		}
	}
	return nil
}
