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

# bench: the ratio of p11derive (derivations, and batch rows in wrap mode) to
# a C loop making the same calls (three
# runs), the latency table (200 us per call, W = 1..64) and derivations per
# second, calls and allocations per derivation of every strategy.
bench:
	@bash .ci/bench

# The fuzz targets, as package:Target:N. Their seed corpora are committed
# under each package's testdata/fuzz/ (go test runs them as tests). N is the
# number of executions make fuzz-short gives the target, about 3 s of fuzzing
# on the 2-core CI machine (measured: FuzzCall 40k execs/s, FuzzParseProfile
# 15k, FuzzParseFunction 5k, FuzzParseLayout 16k, FuzzSelection 12k,
# FuzzRun 12k, FuzzInput 17k).
FUZZ_TARGETS = mechanisms:FuzzCall:120000 derive:FuzzParseProfile:45000 \
	derive:FuzzParseFunction:15000 derive:FuzzParseLayout:45000 \
	derive:FuzzSelection:36000 cmd/p11derive:FuzzRun:36000 \
	internal/batch:FuzzInput:50000

# fuzz-short: every fuzz target for its N executions (-fuzztime Nx), the same
# work on every run and no wall-clock deadline (a duration budget hits the Go
# fuzz coordinator's race golang/go#75804 now and then); make test runs it.
# A finding fails the run and leaves the input under testdata/fuzz/Target/.
fuzz-short:
	@bash .ci/fuzz count $(FUZZ_TARGETS)

# fuzz: every target for FUZZTIME_LONG (10m) each. A finding fails the run;
# a "context deadline exceeded" that saved no input is reported as the
# coordinator's race golang/go#75804, not as a finding, and does not fail it.
FUZZTIME_LONG ?= 10m
fuzz:
	@bash .ci/fuzz $(FUZZTIME_LONG) $(FUZZ_TARGETS)

# soak: the concurrency test at full size under the race detector: 16
# goroutines × 10,000 derivations of mixed strategies on NSS softoken and on
# SoftHSM2 (about a minute here); no error, no object left, no race.
SOAK ?= 10000
soak:
	CGO_ENABLED=1 P11DERIVE_SOAK=$(SOAK) go test -race -count=1 -timeout 60m -run '^TestConcurrentMixed$$' -v ./derive/
