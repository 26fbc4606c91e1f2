package main

// usageTexts are the help of the commands whose flag set does not print
// its own (batch, scheme and version do), by flag set name: parse makes
// them the flag set's usage, followed by the flags.
var usageTexts = map[string]string{
	"derive": `usage: p11derive derive [token flags] --base LABEL | --base-id HEX --kdf KDF [function flags] --data HEX
                        --key-type TYPE [--len N] [--label LABEL [--id HEX] [--token-object [--replace]]]

Derives DK from the base key --base inside the token, as the function --kdf
of the derivation data, and prints DK as one JSON object (docs/json.md):
its label, type, length, check value, attributes and usages, the strategy
that ran, the PKCS#11 calls it took and any warnings. DK is sensitive, not
extractable and a session object (gone when the command exits) unless
--token-object makes it persistent. --base and --base-id select the base key
by CKA_LABEL and/or CKA_ID (or --uri's object= and id=); --label and --id are
DK's. A --token-object whose label a secret key has already is refused before
anything is derived, unless --replace: the old key is destroyed once DK
exists, and kept if DK cannot be made.

Example:
  p11derive derive --token payments --base K --kdf aes-ecb \
    --data 00112233445566778899aabbccddeeff --key-type aes --len 16 --label DK --token-object

Token flags: --module, --init-args or --nss-db, --token, --slot, --uri,
--pin-env, --pin-file, --pin-prompt; --log-level (p11derive help). Exit
status 0, 1 (the token or the data said no), 2 (usage), 130 (interrupted).

Flags:
`,
	"kcv": `usage: p11derive kcv [token flags] --key LABEL | --id HEX [--kcv ecb|cmac|attribute] [--json]

Prints the key's check value: the first 3 bytes of the encryption of a zero
block under the key, computed inside the token (a key without CKA_ENCRYPT is
checked on a session copy that has it, destroyed at once). The key is
selected by CKA_LABEL (--key) and/or CKA_ID (--id), or --uri's object= and
id=. With --json, the key as one JSON object (docs/json.md).

Flags:
`,
	"keygen": `usage: p11derive keygen [token flags] --label LABEL [--id HEX] --key-type TYPE [--len N] [--usage LIST] [--session]

Generates a secret key inside the token (C_GenerateKey): sensitive, never
extractable, a token object unless --session. By default it may derive and
nothing else, which is all a base key for native derivation needs; mac-unwrap
needs --usage sign,unwrap. Asking for encrypt together with derive or unwrap
warns: C_Encrypt of the derivation data would compute DK in the clear.
Prints the key as one JSON object (docs/json.md). A label that exists is
refused.

Flags:
`,
	"probe": `usage: p11derive probe [token flags] [--json | --markdown] [--key LABEL] [--id HEX] [--kdf LIST] [--list-only] [--no-import] [--runs N]

Reports what the token can derive inside itself: the mechanisms that matter,
and for every function and strategy whether it ran and gave the right key
(checked by known answer, or across strategies). It makes session objects
only and destroys them; --list-only runs nothing. With --key, also what the
existing base key can use (its attributes are only read; --id, or --uri's
object= and id=, select it by CKA_ID too). --json prints the report in the
probe package's versioned schema (version 2).

Flags:
`,
	"keys": `usage: p11derive keys [token flags] [--key LABEL] [--id HEX] [--kcv METHOD] [--json]

Lists the secret keys the token's session sees (those --key, --id or --uri's
object= and id= select, or all), sorted by label and ID: label, CKA_ID in
hex, type, length, check value and its method, sensitive, extractable,
token object and usages. A key without CKA_ENCRYPT is checked on a session
copy, destroyed at once; --kcv none reads attributes only. --json prints the
keys document (docs/json.md). Nothing here is key material.

Flags:
`,
	"destroy": `usage: p11derive destroy [token flags] --key LABEL | --id HEX --yes [--json]

Destroys the one secret key --key and/or --id (or --uri's object= and id=)
select (C_DestroyObject). A selection that matches several keys is refused:
give the CKA_ID too (p11derive keys lists them). Without --yes nothing is
done (exit status 2). Prints what it destroyed.

Flags:
`,
}
