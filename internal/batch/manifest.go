package batch

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// A Manifest is what a run derives, and from what: it is the first line of
// the output, a comment ("# p11derive batch {json}") that CSV readers told
// to skip comments skip (Go's encoding/csv with Comment '#', pandas with
// comment='#', or skip the first line). A rerun into the same output must
// have the same manifest, or be refused: a file never holds keys of two
// different derivations. Nothing in it is secret: labels, CKA_IDs, check
// values, names and parameters.
//
// It is a line of the output rather than a file beside it so that the
// parameters cannot be separated from the rows (a copy, a move, a partner
// receiving only the CSV), the two are written, locked and synced as one,
// and no file but the one handed to the run is ever made or touched.
type Manifest struct {
	Format  int    `json:"format"`    // 1
	Version string `json:"p11derive"` // the version that made the output
	// Run is a random tag made with the output: keep-mode keys still under
	// their provisional label carry it, so that a rerun into this output
	// knows its own (and only its own).
	Run  string `json:"run"`
	Mode string `json:"mode"` // "keep" or "wrap"

	Base KeyRef `json:"base"`
	// Scheme is the published scheme of a batch --scheme run (dukpt-ik,
	// emv-mk; its options in Params), which then has no KDF, key type or
	// length of its own: the scheme and the base key make them.
	Scheme   string            `json:"scheme,omitempty"`
	KDF      string            `json:"kdf"`
	Params   map[string]string `json:"params,omitempty"`
	Allow    string            `json:"allow,omitempty"`
	Strategy string            `json:"strategy"`
	KeyType  string            `json:"key_type"`
	Len      int               `json:"len"`

	Wrap          *WrapRef `json:"wrap,omitempty"`
	LabelTemplate string   `json:"label_template,omitempty"`

	// Tokens names the tokens of a run over several (a group, wrap mode),
	// by label and serial; empty for one token. It is a record, not a
	// parameter: a rerun compares everything else but not it. The rows
	// are a function of the base key — proven the same on every token by
	// its check value, which Base holds and a rerun compares — and of the
	// input, not of which tokens computed them, so a run resumed with a
	// token less (one out of service) or another one appends to the same
	// output.
	Tokens []string `json:"tokens,omitempty"`
}

// KeyRef names a key of the token: its label, CKA_ID and check value (hex).
type KeyRef struct {
	Label string `json:"label"`
	ID    string `json:"id,omitempty"`
	KCV   string `json:"kcv,omitempty"`
}

// WrapRef is the transport key of wrap mode and its mechanism.
type WrapRef struct {
	Key  KeyRef `json:"key"`
	Mech string `json:"mech"`
	IV   string `json:"iv,omitempty"`
}

const manifestPrefix = "# p11derive batch "

// NewRun gives m a fresh run tag.
func (m *Manifest) NewRun() {
	b := make([]byte, 8)
	rand.Read(b)
	m.Run = hex.EncodeToString(b)
}

func (m *Manifest) line() (string, error) {
	if m.Run == "" {
		m.NewRun()
	}
	m.Format = 1
	b, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	return manifestPrefix + string(b) + "\n", nil
}

func parseManifest(line []byte) (*Manifest, error) {
	body := bytes.TrimPrefix(bytes.TrimRight(line, "\r\n"), []byte(manifestPrefix))
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("its manifest does not parse: %v", err)
	}
	if m.Format != 1 || m.Run == "" {
		return nil, fmt.Errorf("its manifest is of format %d, without a run tag", m.Format)
	}
	return &m, nil
}

// ManifestDiffError is a rerun whose parameters differ from those of the
// output.
type ManifestDiffError struct {
	Diffs []string // "base.label: \"K\" in the output, \"K2\" now", …
}

func (e *ManifestDiffError) Error() string {
	return "it was made by a run with other parameters — " + strings.Join(e.Diffs, "; ") +
		": refused (a file never mixes keys of two derivations); give another --output, or --new-output to move this one aside and start afresh"
}

// compare returns a *ManifestDiffError naming every field in which m and
// old differ, the run tag aside.
func (m *Manifest) compare(old *Manifest) error {
	a, b := flatten(old), flatten(m)
	var diffs []string
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if k == "run" || k == "format" || k == "tokens" {
			continue
		}
		if a[k] != b[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %s in the output, %s now", k, show(a[k]), show(b[k])))
		}
	}
	if len(diffs) > 0 {
		return &ManifestDiffError{Diffs: diffs}
	}
	return nil
}

func show(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

// flatten is m as dotted field names and their JSON values.
func flatten(m *Manifest) map[string]string {
	b, _ := json.Marshal(m)
	var v any
	json.Unmarshal(b, &v)
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if o, ok := v.(map[string]any); ok {
			for k, x := range o {
				name := k
				if prefix != "" {
					name = prefix + "." + k
				}
				walk(name, x)
			}
			return
		}
		j, _ := json.Marshal(v)
		out[prefix] = string(j)
	}
	walk("", v)
	return out
}
