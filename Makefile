# The two set-up commands of the README: `make demo` and `make test`.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: demo test deps check bench

# demo: a throwaway SoftHSM2 token, a base key inside it, DK derived inside.
demo:
	bash examples/demo/demo.sh

# test: installs the lab's Debian packages if missing, then formatting, vet,
# and every test on real tokens (SoftHSM2, NSS softoken).
test: deps check
	CGO_ENABLED=1 go test -race -count=1 ./...

deps:
	@bash .ci/deps

check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

# bench: derivations per second and PKCS#11 calls per derivation, both tokens.
bench:
	go test -run '^$$' -bench . -benchtime 2s ./derive/
