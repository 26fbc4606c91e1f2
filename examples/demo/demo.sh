#!/usr/bin/env bash
# make demo: derive DK = AES-ECB(data, K) inside a throwaway SoftHSM2 token.
# K is generated inside the token and never leaves it; DK is made inside it.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"

if ! command -v softhsm2-util >/dev/null; then
	echo "== installing SoftHSM2 (Debian package softhsm2)"
	sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq softhsm2 >/dev/null
fi
module=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/"$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"/softhsm/libsofthsm2.so; do
	[ -f "$m" ] && module="$m" && break
done
[ -n "$module" ] || { echo "libsofthsm2.so not found" >&2; exit 1; }

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/tokens"
cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
CONF
export SOFTHSM2_CONF="$dir/softhsm2.conf"
export P11DERIVE_MODULE="$module"
# A demo PIN for a token that exists for the next few seconds only.
export P11DERIVE_PIN=1234
softhsm2-util --init-token --free --label p11derive-demo --so-pin 123456 --pin "$P11DERIVE_PIN" >/dev/null
echo "== throwaway SoftHSM2 token 'p11derive-demo' in $dir"

go build -o "$dir/p11derive" ./cmd/p11derive
p11derive() { "$dir/p11derive" "$@"; }

echo "== base key K: AES-128, generated inside the token, sensitive, never extractable, derive only"
p11derive keygen --token p11derive-demo --label K --key-type aes --len 16

data=00112233445566778899aabbccddeeff
echo "== DK = AES-ECB(K, $data), derived inside the token and kept there as a token object"
p11derive derive --token p11derive-demo --base K --kdf aes-ecb --data "$data" --key-type aes --len 16 --label DK --token-object
echo "== a new process finds DK in the token; its check value, computed inside, is:"
p11derive kcv --token p11derive-demo --key DK
echo "== DK's value never left the token: only its attributes and check value did."
