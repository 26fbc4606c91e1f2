package batch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/baseline"
	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// latencyDelay is the round trip the latency benchmark plays on every
// PKCS#11 call: a network HSM's, of the order of p11-kit's RPC over a
// unix socket (~27 µs here) to a remote HSM's (100 µs to 1 ms).
const latencyDelay = 200 * time.Microsecond

// delayedToken is NSS softoken's crypto slot behind a forwarder copy that
// sleeps latencyDelay before every call, opened once per test binary.
var (
	latencyMu  sync.Mutex
	latencyTok *counted
)

func delayedToken(tb testing.TB) *counted {
	tb.Helper()
	latencyMu.Lock()
	defer latencyMu.Unlock()
	if latencyTok != nil {
		return latencyTok
	}
	real := lab.NSS(tb)
	ft := fwd.Wrap(tb, real, fwd.Config{Delays: []fwd.Delay{{Func: "*", D: latencyDelay}}})
	latencyTok = &counted{Token: labtok.New(tb, "nss+200us", ft), fwd: ft}
	return latencyTok
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// total is the number of PKCS#11 calls the copy counted.
func (c *counted) total(tb testing.TB) int {
	n := 0
	for _, v := range c.calls(tb) {
		n += v
	}
	return n
}

// BenchmarkLatency measures how much concurrency hides a token's latency:
// every PKCS#11 call sleeps 200 µs in the forwarder (a network HSM played
// on NSS softoken's crypto slot), and Token.Derive (with Destroy) and a
// batch in wrap mode run from W = 1, 2, 4, ... 64 goroutines (workers).
// Each row reports rows/s, the calls per row (counted by the forwarder in
// the same run), the bound W / (calls per row × 200 µs) that a token
// serving every call in parallel allows, and efficiency, rows/s over that
// bound.
func BenchmarkLatency(b *testing.B) {
	c := delayedToken(b)
	lt := c.Token
	ctx := context.Background()
	m, _ := ParseWrapMech("aes-key-wrap")
	for _, mode := range []string{"derive", "c-derive", "batch-wrap", "c-batch-wrap"} {
		for w := 1; w <= 64; w *= 2 {
			b.Run(fmt.Sprintf("%s/W=%d", mode, w), func(b *testing.B) {
				var run func(n int)
				switch mode {
				case "derive":
					base := lt.ImportUses(b, pkcs11.CKK_AES, kValue, "K-"+uniq(b), derive.UseDerive)
					req := derive.Request{Function: derive.Encrypt{Cipher: derive.AES, Mode: derive.ECB}, KeyType: derive.KeyAES128, Strategy: derive.Native}
					run = func(n int) {
						var next atomic.Int64
						var wg sync.WaitGroup
						for g := 0; g < w; g++ {
							wg.Add(1)
							go func() {
								defer wg.Done()
								r := req
								r.Data = make([]byte, 16)
								for i := next.Add(1); i <= int64(n); i = next.Add(1) {
									r.Data[0], r.Data[1] = byte(i), byte(i>>8)
									res, err := lt.Tok.Derive(ctx, base, r)
									if err != nil {
										b.Error(err)
										return
									}
									if err := lt.Tok.Destroy(ctx, res.Key); err != nil {
										b.Error(err)
										return
									}
								}
							}()
						}
						wg.Wait()
					}
				case "batch-wrap":
					d := batchCase{"nss", derive.Native, false}.deriver(b, lt)
					run = func(n int) { runRows(b, d, "r", n, w) }
				case "c-derive", "c-batch-wrap":
					run = cLoops(b, c.fwd, m.CKM, mode, w)
				}
				run(w) // sessions opened: as many as W
				before := c.total(b)
				cpu0 := cpuTime()
				b.ResetTimer()
				run(b.N)
				b.StopTimer()
				cores := (cpuTime() - cpu0).Seconds() / b.Elapsed().Seconds()
				perRow := float64(c.total(b)-before) / float64(b.N)
				rate := float64(b.N) / b.Elapsed().Seconds()
				bound := float64(w) / (perRow * latencyDelay.Seconds())
				b.ReportMetric(rate, "rows/s")
				b.ReportMetric(perRow, "calls/row")
				b.ReportMetric(bound, "bound-rows/s")
				b.ReportMetric(rate/bound, "efficiency")
				b.ReportMetric(cores, "cpu-cores")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// cLoops is the C baseline's ceiling for the latency table: W C loops
// (internal/baseline, a session each) making p11derive's calls — derive,
// read-back, destroy (c-derive: Token.Derive and Destroy), or a wrap-mode
// row (c-batch-wrap) — in W threads, through the same delaying forwarder;
// each loop is one cgo crossing, so Go's scheduler is not in the way. What
// the C loops reach is what this machine allows W sleeping threads.
func cLoops(b *testing.B, l *lab.Token, mech uint, mode string, w int) func(n int) {
	loops := make([]*baseline.Loop, w)
	for i := range loops {
		loops[i] = openLoop(b, l, mech)
	}
	m := baseline.Derive
	if mode == "c-batch-wrap" {
		m = baseline.DeriveWrap
	}
	return func(n int) {
		eachShare(w, n, func(i, share int) {
			if err := loops[i].Run(m, share); err != nil {
				b.Error(err)
			}
		})
	}
}
