package probe

// SchemaVersion is the version of the report's JSON form (see the package
// documentation). It changes only when a field changes meaning or is
// removed; new fields may appear within a version.
//
// Version 2 (p11derive's key JSON names in the key report): key.type is
// key.key_type, and key.id (CKA_ID, hex) and key.usages are new.
const SchemaVersion = 2

// Status is what the probe found out about one strategy computing one
// function on the token (see the package documentation for the exact
// definitions).
type Status string

// The statuses, from best to worst.
const (
	// Verified: it ran without error and made the right key, checked by
	// known answer or cross-check.
	Verified Status = "verified"
	// Ran: it ran without error, but its key could not be checked.
	Ran Status = "ran"
	// Listed: the token lists every mechanism it needs, but the probe did
	// not run it.
	Listed Status = "listed"
	// Failed: it ran and the token returned an error (ckr says which), or
	// made a wrong key ("wrong result" in reason), or a key weaker than
	// requested.
	Failed Status = "failed"
	// Unavailable: the token does not list a mechanism it needs and
	// refused it too, or the strategy cannot compute the function at all
	// (reason says which).
	Unavailable Status = "unavailable"
	// Error: the module or the session failed (CKR_CRYPTOKI_NOT_INITIALIZED,
	// CKR_GENERAL_ERROR, CKR_DEVICE_ERROR, CKR_SESSION_*, a key that
	// vanished, an unknown code...): the probe learnt nothing about the
	// strategy, and the report is incomplete.
	Error Status = "error"
)

// VerifiedBy says how a result's key was checked.
type VerifiedBy string

// The ways a key is checked (docs/design.md §7).
const (
	// KnownAnswer: the base key was imported with a known value, and DK's
	// check value (computed in the token) equals the software reference's.
	KnownAnswer VerifiedBy = "known-answer"
	// CrossCheck: the base key was generated in the token, and DK's check
	// value equals that of every other strategy that computed the same
	// function from the same key and data (at least two).
	CrossCheck VerifiedBy = "cross-check"
	// None: not checked.
	None VerifiedBy = "none"
)

// Report is the probe's report on one token.
type Report struct {
	SchemaVersion int    `json:"schema_version"`
	Generator     string `json:"generator"`
	// Time is when the probe ran (RFC 3339, UTC), DurationMS how long it
	// took.
	Time       string `json:"time"`
	DurationMS int64  `json:"duration_ms"`
	// ListOnly: the probe ran nothing and made no object; results come from
	// the mechanism list alone (statuses listed and unavailable only).
	ListOnly bool `json:"list_only,omitempty"`

	Token        TokenInfo    `json:"token"`
	Verification Verification `json:"verification"`
	Mechanisms   []Mechanism  `json:"mechanisms"`
	Results      []Result     `json:"results"`
	// Key is the analysis of an existing base key (Options.KeyLabel).
	Key *KeyReport `json:"key,omitempty"`
	// Incomplete: some results are errors (status error: the module or a
	// session failed, not the token answering for a mechanism), so the
	// report does not say what the token can do. p11derive probe then
	// exits with status 3.
	Incomplete bool `json:"incomplete,omitempty"`
}

// TokenInfo identifies the token and its module.
type TokenInfo struct {
	Label        string `json:"label"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	// Firmware and Hardware are CK_TOKEN_INFO's versions, "major.minor".
	Firmware string   `json:"firmware"`
	Hardware string   `json:"hardware"`
	Slot     uint     `json:"slot"`
	Flags    []string `json:"flags"`
	// Session is the state of the probe's sessions (C_GetSessionInfo),
	// such as CKS_RW_PUBLIC_SESSION (no login) or CKS_RW_USER_FUNCTIONS.
	Session string     `json:"session"`
	Module  ModuleInfo `json:"module"`
}

// ModuleInfo is the module's CK_INFO (C_GetInfo).
type ModuleInfo struct {
	Description  string `json:"description"`
	Manufacturer string `json:"manufacturer"`
	Version      string `json:"version"`
	// PKCS11Version is the Cryptoki version the module implements.
	PKCS11Version string `json:"pkcs11_version"`
}

// Verification says how the probe's base keys were made, hence how
// results could be checked.
type Verification struct {
	// Method is known-answer (every base key was imported), cross-check
	// (every base key was generated in the token), mixed, or none (no
	// base key, or ListOnly).
	Method   string    `json:"method"`
	BaseKeys []BaseKey `json:"base_keys"`
}

// BaseKey is one of the probe's own base keys: session objects, destroyed
// when the probe ends.
type BaseKey struct {
	// Type is aes-128, des3, des or generic-32.
	Type string `json:"type"`
	// Source is imported (C_CreateObject of a known value), generated
	// (C_GenerateKey), or none (neither worked: see Reason).
	Source string `json:"source"`
	// Usage are the attributes the key was made with: only those the
	// strategies it serves need (CKA_DERIVE for native; CKA_SIGN and
	// CKA_UNWRAP for mac-unwrap, and CKA_ENCRYPT for cmac-unwrap;
	// CKA_UNWRAP for the unwraps), or all of them for a generated key
	// that several strategies share, so that they can be cross-checked.
	Usage []string `json:"usage"`
	// ImportCKR is why the token refused the import, if it did;
	// GenerateCKR why it refused the generation.
	ImportCKR   string `json:"import_ckr,omitempty"`
	GenerateCKR string `json:"generate_ckr,omitempty"`
	// Session is "read-write" when the key was made in a read-write
	// session after the token refused it in a read-only one
	// (CKR_SESSION_READ_ONLY), which only Options.ReadWrite (p11derive
	// probe --rw) allows.
	Session string   `json:"session,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Notes   []string `json:"notes,omitempty"`
}

// Mechanism is one mechanism that matters to derivation: whether the token
// lists it and, if it does, what C_GetMechanismInfo says.
type Mechanism struct {
	Name string `json:"name"`
	// Code is the CKM_ value in hex, e.g. "0x1104".
	Code string `json:"code"`
	// Group is encrypt-data, mac, cipher, kdf, wrap or keygen.
	Group  string `json:"group"`
	Listed bool   `json:"listed"`
	// Flags are the CKF_ flags, lower case without the prefix: encrypt,
	// decrypt, digest, sign, verify, wrap, unwrap, derive, generate, hw...
	Flags      []string `json:"flags,omitempty"`
	MinKeySize uint     `json:"min_key_size,omitempty"`
	MaxKeySize uint     `json:"max_key_size,omitempty"`
	// InfoCKR is C_GetMechanismInfo's error for a listed mechanism.
	InfoCKR string `json:"info_ckr,omitempty"`
}

// Result is one strategy computing one function.
type Result struct {
	// KDF is the function, as p11derive derive --kdf names it; Params its
	// parameters (as the command's flags name them) when not the defaults.
	KDF    string            `json:"kdf"`
	Params map[string]string `json:"params,omitempty"`
	// Strategy is as p11derive derive --strategy names it.
	Strategy   string     `json:"strategy"`
	Status     Status     `json:"status"`
	VerifiedBy VerifiedBy `json:"verified_by"`
	// Calls is the number of PKCS#11 calls one derivation took (reading DK
	// back included), when it made a key; 0 otherwise. PlannedCalls is the
	// strategy's own count (reading DK back not included).
	Calls        int `json:"calls"`
	PlannedCalls int `json:"planned_calls"`
	// MedianNS is the median wall time of one derivation over Runs runs,
	// in nanoseconds, when it made keys.
	MedianNS int64 `json:"median_ns,omitempty"`
	Runs     int   `json:"runs,omitempty"`
	// KeyType is DK's type, BaseKey the probe's base key's.
	KeyType string `json:"key_type"`
	BaseKey string `json:"base_key"`
	// Needs are the attributes the base key must have set to true.
	Needs      []string       `json:"needs"`
	Mechanisms []MechanismUse `json:"mechanisms"`
	// CKR is the token's return value when a call failed, Call the
	// PKCS#11 function that returned it.
	CKR    string `json:"ckr,omitempty"`
	Call   string `json:"call,omitempty"`
	Reason string `json:"reason,omitempty"`
	// CheckValue is DK's check value (hex), Expected the reference's
	// (known-answer only).
	CheckValue string   `json:"check_value,omitempty"`
	Expected   string   `json:"expected,omitempty"`
	Notes      []string `json:"notes,omitempty"`
}

// MechanismUse is a mechanism a strategy calls, and for what.
type MechanismUse struct {
	Name   string `json:"name"`
	Listed bool   `json:"listed"`
	// Use is the operation the strategy calls it for: derive, sign
	// (MAC), unwrap or encrypt.
	Use string `json:"use"`
	// Flag says whether C_GetMechanismInfo gives the matching CKF_ flags;
	// absent when the mechanism is not listed or its info unknown. Lacks
	// names those it does not give ("CKF_UNWRAP").
	Flag  *bool  `json:"flag,omitempty"`
	Lacks string `json:"lacks,omitempty"`
}

// KeyReport is what an existing base key can do (Options.KeyLabel). The
// probe only reads the key's attributes: it never changes the key, and
// derives nothing from it.
//
// Its fields that are also fields of p11derive's key object (label, id,
// key_type, len, token_object, usages, warnings: docs/json.md) have the
// same names and meaning.
type KeyReport struct {
	Label string `json:"label"`
	// ID is the key's CKA_ID in hex, "" when it has none.
	ID          string `json:"id"`
	Type        string `json:"key_type"` // aes, des, des2, des3, generic
	Len         int    `json:"len"`
	TokenObject bool   `json:"token_object"`
	// Usages are the key's uses that are true (derive, encrypt, decrypt,
	// sign, verify, wrap, unwrap), as p11derive keygen --usage names them.
	Usages []string `json:"usages"`
	// Attributes are the key's boolean attributes, CKA_ names.
	Attributes map[string]bool `json:"attributes"`
	// UnwrapTemplate is the key's CKA_UNWRAP_TEMPLATE.
	UnwrapTemplate UnwrapTemplate `json:"unwrap_template"`
	// MACUnwrapSafe: the unwrap template forces CKA_SENSITIVE=true and
	// CKA_EXTRACTABLE=false on every key unwrapped with this key, so that
	// MAC-unwrap cannot be turned into an encryption oracle (docs/design.md
	// §3.2).
	MACUnwrapSafe bool     `json:"mac_unwrap_safe"`
	Uses          []KeyUse `json:"uses"`
	Notes         []string `json:"notes,omitempty"`
	// Warnings say what weakens the key as a base key: CKA_ENCRYPT (C_Encrypt
	// computes every DK in the clear) or CKA_EXTRACTABLE
	// (derive.BaseKeyWarnings).
	Warnings []string `json:"warnings,omitempty"`
}

// UnwrapTemplate is what the probe read of a key's CKA_UNWRAP_TEMPLATE.
type UnwrapTemplate struct {
	// State is present, absent or unreadable (Reason says why).
	State string `json:"state"`
	// Attributes are the template's entries: CKA_ name to value (true or
	// false for booleans, hex otherwise).
	Attributes           map[string]string `json:"attributes,omitempty"`
	ForcesSensitive      bool              `json:"forces_sensitive"`
	ForcesNotExtractable bool              `json:"forces_not_extractable"`
	Reason               string            `json:"reason,omitempty"`
}

// KeyUse is whether the key can compute one function with one strategy on
// this token.
type KeyUse struct {
	KDF      string            `json:"kdf"`
	Params   map[string]string `json:"params,omitempty"`
	Strategy string            `json:"strategy"`
	// Usable is now (the key has what the strategy needs and the strategy
	// works on this token: verified or ran), with-changes (it would, with
	// the attributes in Set changed to true), or no (Reason says why).
	Usable string `json:"usable"`
	// Set are the attributes to set to true first.
	Set []string `json:"set,omitempty"`
	// TokenStatus is the strategy's status on this token, from the
	// probe's own test keys ("" when not probed).
	TokenStatus Status `json:"token_status,omitempty"`
	// ProbedWith is the kind of base key the probe found TokenStatus with,
	// when it is not of this key's type (an HMAC function probed with a
	// generic secret, used here with an AES key): the token may treat the
	// two differently.
	ProbedWith string `json:"probed_with,omitempty"`
	Reason     string `json:"reason,omitempty"`
}
