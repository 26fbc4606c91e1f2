# The two set-up commands of the README: `make demo` and `make test`.
export PATH := $(PATH):/usr/local/go/bin

.PHONY: demo test deps check bench fuzz-short fuzz soak

# demo: a throwaway SoftHSM2 token, a base key inside it, DK derived inside.
demo:
	bash examples/demo/demo.sh

# test: installs the lab's Debian packages if missing, then formatting, vet,
# and every test on real tokens (SoftHSM2, NSS softoken).
# fuzz-short runs first, so that the test run's summary closes the output.
test: deps check fuzz-short
	CGO_ENABLED=1 go test -race -count=1 ./...

deps:
	@bash .ci/deps

check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

# bench: derivations per second and PKCS#11 calls per derivation, both tokens.
bench:
	go test -run '^$$' -bench . -benchtime 2s ./derive/

# The fuzz targets, as package:Target. Their seed corpora are committed
# under each package's testdata/fuzz/ (go test runs them as tests).
FUZZ_TARGETS = mechanisms:FuzzCall derive:FuzzParseProfile derive:FuzzParseFunction \
	derive:FuzzParseLayout derive:FuzzSelection cmd/p11derive:FuzzRun internal/batch:FuzzInput

# fuzz-short: every fuzz target for FUZZTIME (5s) each; make test runs it.
# A finding fails the target and leaves the input under testdata/fuzz/.
FUZZTIME ?= 5s
fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
		CGO_ENABLED=1 go test -timeout 0 -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg/ >/tmp/p11derive-fuzz.$$$$.log 2>&1 \
			|| { cat /tmp/p11derive-fuzz.$$$$.log; rm -f /tmp/p11derive-fuzz.$$$$.log; exit 1; }; \
		tail -n 3 /tmp/p11derive-fuzz.$$$$.log | grep -m1 'execs' || true; \
		rm -f /tmp/p11derive-fuzz.$$$$.log; \
	done

# fuzz: the same, longer: FUZZTIME_LONG (10m) per target.
FUZZTIME_LONG ?= 10m
fuzz:
	@$(MAKE) --no-print-directory fuzz-short FUZZTIME=$(FUZZTIME_LONG)

# soak: the concurrency test at full size under the race detector: 16
# goroutines × 10,000 derivations of mixed strategies on NSS softoken and on
# SoftHSM2 (about a minute here); no error, no object left, no race.
SOAK ?= 10000
soak:
	CGO_ENABLED=1 P11DERIVE_SOAK=$(SOAK) go test -race -count=1 -timeout 60m -run '^TestConcurrentMixed$$' -v ./derive/
