package batch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/internal/baseline"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

// BenchmarkBatchRatio measures the batch engine against the same PKCS#11
// calls made by a C loop (internal/baseline, DeriveWrap mode: derive,
// read-back, check value by C_EncryptInit + C_Encrypt, C_WrapKey, destroy —
// 6 calls per row), interleaved in chunks in one run so that both see the
// same machine. The engine runs as `p11derive batch` does with default
// flags in wrap mode: Run with the real Deriver, strategy auto, aes-ecb
// into AES-128 keys, wrapped with aes-key-wrap, from session objects (the
// base and transport keys are session keys, as the default session copies
// are). Input and output are in memory (a CSV made before the clock
// starts, OpenStream into io.Discard): the disk is not measured. The C
// loop runs in one session, one thread, whatever the workers.
//
// It reports ratio (the engine's rows/s over the C loop's), both rates and
// calls/row (the Token's own count over the measured rows), and, in the
// same chunks, what bounds the ratio on this machine:
//
//   - alone: the Deriver with nothing around it (Do called on ready rows
//     from as many goroutines as workers, no reader, no writer), over the C
//     loop: the engine's ratio with a free pipeline;
//   - c-threads: C loops in as many threads as workers (a session each),
//     over the one C loop: what that many threads give here;
//   - pipe-us/row: the CPU a row costs the engine beyond the Deriver alone
//     (the reader, the writer and their hand-offs), in microseconds: with
//     as many workers as cores, it is taken from the workers.
func BenchmarkBatchRatio(b *testing.B) {
	// Not nssdb: strategy auto computes aes-ecb there by mac-unwrap, not
	// with the C loop's calls.
	for _, kind := range []string{"nss", "softhsm2"} {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/workers=%d", kind, workers), func(b *testing.B) {
				benchRatio(b, labtok.Shared(b, kind), workers)
			})
		}
	}
}

func benchRatio(b *testing.B, lt *labtok.Token, workers int) {
	ctx := context.Background()
	base := lt.ImportUses(b, pkcs11.CKK_AES, kValue, "K-"+uniq(b), derive.UseDerive|derive.UseEncrypt|derive.UseSign|derive.UseUnwrap)
	m, _ := ParseWrapMech("aes-key-wrap")
	d := &Deriver{Token: lt.Tok, Base: base, Spec: Spec{KDF: "aes-ecb", KeyType: derive.KeyAES128},
		Wrap: &Wrap{Key: lt.ImportUses(b, pkcs11.CKK_AES, tValue, "T-"+uniq(b), derive.UseWrap|derive.UseUnwrap), Mech: m}}
	require.NoError(b, d.Check())

	loops := make([]*baseline.Loop, workers)
	for i := range loops {
		loops[i] = openLoop(b, lt.Lab, m.CKM)
	}
	runC := func(threads, n int) {
		if threads == 1 {
			require.NoError(b, loops[0].Run(baseline.DeriveWrap, n))
			return
		}
		eachShare(threads, n, func(i, share int) {
			if err := loops[i].Run(baseline.DeriveWrap, share); err != nil {
				b.Error(err)
			}
		})
	}
	runChunk := func(job Job, csv []byte) int {
		in, err := NewInput(bytes.NewReader(csv))
		require.NoError(b, err)
		out, err := OpenStream(io.Discard, OutputOptions{Header: d.Header()})
		require.NoError(b, err)
		st, err := Run(ctx, in, out, job, Config{Workers: workers, OnFailure: func(e *RowError) { b.Error(e) }})
		require.NoError(b, err)
		require.NoError(b, out.Close())
		require.Zero(b, st.Failed)
		return st.Written
	}
	alone := func(rows []Row) {
		eachShare(workers, len(rows), func(i, _ int) {
			for j := i; j < len(rows); j += workers {
				if _, _, err := d.Do(ctx, &rows[j]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	// Each once, outside the measure.
	runChunk(d, genRows(64, "warm"))
	runC(workers, 64)
	// The engine makes the C loop's calls: the native strategy (C_DeriveKey).
	var buf bytes.Buffer
	in, err := NewInput(bytes.NewReader(genRows(1, "chk")))
	require.NoError(b, err)
	out, err := OpenStream(&buf, OutputOptions{Header: d.Header()})
	require.NoError(b, err)
	_, err = Run(ctx, in, out, d, Config{Workers: 1})
	require.NoError(b, err)
	require.NoError(b, out.Close())
	require.Contains(b, buf.String(), ",native,aes-ecb")

	// timed adds f's time to into, and its CPU time to cpu if not nil.
	timed := func(into, cpu *time.Duration, f func()) {
		t0, c0 := time.Now(), cpuTime()
		f()
		*into += time.Since(t0)
		if cpu != nil {
			*cpu += cpuTime() - c0
		}
	}
	const chunk = 4096
	var goTime, cTime, cwTime, aloneTime, goCPU, aloneCPU time.Duration
	rows, calls := 0, int64(0)
	b.ResetTimer()
	for done, i := 0, 0; done < b.N; i++ {
		k := min(chunk, b.N-done)
		b.StopTimer()
		csv := genRows(k, fmt.Sprintf("c%d-", i))
		ready := make([]Row, k)
		for j := range ready {
			ready[j] = Row{ID: fmt.Sprintf("a%d-%d", i, j), Data: fmt.Appendf(nil, "%016x", j)}
		}
		b.StartTimer()
		// The order turns each chunk, so that none always follows another.
		steps := []func(){
			func() {
				c0 := lt.Tok.Calls()
				timed(&goTime, &goCPU, func() { rows += runChunk(d, csv) })
				calls += lt.Tok.Calls() - c0
			},
			func() { timed(&cTime, nil, func() { runC(1, k) }) },
			func() { timed(&aloneTime, &aloneCPU, func() { alone(ready) }) },
		}
		if workers > 1 {
			steps = append(steps, func() { timed(&cwTime, nil, func() { runC(workers, k) }) })
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
		done += k
	}
	b.StopTimer()
	goRate := float64(rows) / goTime.Seconds()
	cRate := float64(b.N) / cTime.Seconds()
	b.ReportMetric(goRate/cRate, "ratio")
	b.ReportMetric(goRate, "rows/s")
	b.ReportMetric(cRate, "C/s")
	b.ReportMetric(float64(calls)/float64(rows), "calls/row")
	b.ReportMetric(cTime.Seconds()/aloneTime.Seconds(), "alone")
	cw := 1.0
	if workers > 1 {
		cw = cTime.Seconds() / cwTime.Seconds()
	}
	b.ReportMetric(cw, "c-threads")
	b.ReportMetric(float64((goCPU-aloneCPU).Nanoseconds())/1e3/float64(b.N), "pipe-us/row")
	b.ReportMetric(0, "ns/op")
}

// genRows is a batch input of n rows, ids prefix0, prefix1, ...
func genRows(n int, prefix string) []byte {
	csv, err := io.ReadAll(&genCSV{n: n, prefix: prefix})
	if err != nil {
		panic(err)
	}
	return csv
}

// eachShare runs f(i, share) in w goroutines at once, the shares of n
// rows, and waits for them.
func eachShare(w, n int, f func(i, share int)) {
	var wg sync.WaitGroup
	for i := range w {
		share := n / w
		if i < n%w {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, share)
		}()
	}
	wg.Wait()
}

// openLoop opens the C baseline on l (a lab token, or a forwarder copy in
// front of one) with the base key kValue and the transport key tValue
// (wrapped with mech), closed when the benchmark ends. DK's template and
// read-back are p11derive's: derive's template for an extractable,
// sensitive AES-128 session key with CKA_ENCRYPT, and its 16 fixed-size
// attributes.
func openLoop(b *testing.B, l *lab.Token, mech uint) *baseline.Loop {
	pin := ""
	if l.Login {
		pin = l.PIN
	}
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 16),
	}
	if pin != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true))
	}
	for _, u := range []uint{pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT, pkcs11.CKA_SIGN, pkcs11.CKA_VERIFY, pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE} {
		tmpl = append(tmpl, pkcs11.NewAttribute(u, u == pkcs11.CKA_ENCRYPT))
	}
	read := []uint{pkcs11.CKA_CLASS, pkcs11.CKA_KEY_TYPE,
		pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
		pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE,
		pkcs11.CKA_DERIVE, pkcs11.CKA_SIGN, pkcs11.CKA_VERIFY, pkcs11.CKA_ENCRYPT, pkcs11.CKA_DECRYPT,
		pkcs11.CKA_WRAP, pkcs11.CKA_UNWRAP, pkcs11.CKA_VALUE_LEN}
	sizes := make([]int, len(read))
	for i, t := range read {
		sizes[i] = 1
		if t == pkcs11.CKA_CLASS || t == pkcs11.CKA_KEY_TYPE || t == pkcs11.CKA_VALUE_LEN {
			sizes[i] = 8
		}
	}
	loop, err := baseline.Open(l.Module, l.InitArgs, l.SlotID, pin, kValue, make([]byte, 16), tmpl, read, sizes)
	require.NoError(b, err)
	b.Cleanup(loop.Close)
	require.NoError(b, loop.ImportWrapKey(tValue, mech))
	return loop
}
