package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/probe"
)

// schemaVersion is the version of the command's JSON documents (see
// docs/json.md): it changes when a field changes meaning or goes away.
const schemaVersion = 1

// keyJSON is how every command prints a key object: derive, keygen, kcv
// --json, scheme, keys and destroy (the probe's key report uses the same
// names where its fields are these). It holds no key material: the check
// value is computed in the token (E_K(0)'s or CMAC_K(0)'s first 3 bytes),
// or read from CKA_CHECK_VALUE when asked. It has no object handle: a
// handle means nothing once the process has closed its sessions; keys are
// selected by label and ID.
type keyJSON struct {
	Label string `json:"label"`
	// ID is CKA_ID in hex, "" when the key has none.
	ID      string `json:"id"`
	KeyType string `json:"key_type"` // aes, des, des2, des3, generic (--key-type)
	Len     int    `json:"len"`      // bytes; 0 when the token does not say
	KCV     string `json:"kcv,omitempty"`
	// KCVMethod is the check value's convention: "ecb", "cmac", or "none"
	// when the key has none (KCVUnavailable says why, unless none was
	// asked for); KCVSource says how it was had ("computed", "computed on
	// a session copy", "CKA_CHECK_VALUE").
	KCVMethod      string `json:"kcv_method"`
	KCVSource      string `json:"kcv_source,omitempty"`
	KCVUnavailable string `json:"kcv_unavailable,omitempty"`
	Sensitive      bool   `json:"sensitive"`
	Extractable    bool   `json:"extractable"`
	// AlwaysSensitive and NeverExtractable are false for a key the token
	// made readable or extractable and p11derive tightened (warnings say
	// so).
	AlwaysSensitive  bool     `json:"always_sensitive"`
	NeverExtractable bool     `json:"never_extractable"`
	Token            bool     `json:"token_object"`
	Usages           []string `json:"usages"`
	Warnings         []string `json:"warnings,omitempty"`
}

// derivationJSON is how a key was derived: the fields derive and scheme
// add to the key's.
type derivationJSON struct {
	KDF      string `json:"kdf,omitempty"`
	Strategy string `json:"strategy,omitempty"`
	Calls    int    `json:"calls,omitempty"`
}

// keyDoc is a document that is one key: keygen, kcv --json, derive.
type keyDoc struct {
	SchemaVersion int `json:"schema_version"`
	keyJSON
	derivationJSON // derive only (its fields are omitted when empty)
}

// keysDoc is the document of keys (and destroy, whose list has one key).
type keysDoc struct {
	SchemaVersion int       `json:"schema_version"`
	Keys          []keyJSON `json:"keys"`
}

// keyOf is k as JSON, without a check value (kcv_method none).
func keyOf(k *derive.Key) keyJSON {
	return keyJSON{Label: k.Label, ID: hex.EncodeToString(k.ID), KeyType: derive.KeyTypeName(k.Type), Len: k.Len,
		Sensitive: k.Sensitive, Extractable: k.Extractable, AlwaysSensitive: k.AlwaysSensitive,
		NeverExtractable: k.NeverExtractable, Token: k.Token, Usages: probe.Usages(k), Warnings: k.Warnings,
		KCVMethod: string(derive.KCVNone)}
}

// setKCV gives j the check value kcv.
func (j *keyJSON) setKCV(kcv *derive.KCV) {
	j.KCV, j.KCVMethod, j.KCVSource = hex.EncodeToString(kcv.Value), string(kcv.Method), kcv.Source
}

// describe is k as JSON, with its check value by the default convention
// (ecb).
func describe(ctx context.Context, tok *derive.Token, k *derive.Key) keyJSON {
	return describeKCV(ctx, tok, k, derive.KCVECB)
}

// describeKCV is k as JSON with its check value by method m. A key with no
// check value by m (a key type without the convention, a token refusing
// the session copy a key without the usage needs) says so, by
// kcv_method "none" and the reason.
func describeKCV(ctx context.Context, tok *derive.Token, k *derive.Key, m derive.KCVMethod) keyJSON {
	j := keyOf(k)
	if m == derive.KCVNone {
		return j
	}
	kcv, err := tok.CheckValueBy(ctx, k, m)
	if err != nil {
		j.KCVUnavailable = err.Error()
		return j
	}
	j.setKCV(kcv)
	return j
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
