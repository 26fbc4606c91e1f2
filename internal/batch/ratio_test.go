package batch

import (
	"bytes"
	"context"
	"fmt"
	"io"
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
// are). Input and output are in memory (a generated CSV, OpenStream into
// io.Discard): the disk is not measured. The C loop runs in one session,
// one thread, whatever the workers.
//
// It reports ratio (the engine's rows/s over the C loop's), both rates and
// calls/row (the Token's own count over the measured rows).
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

	loop := openLoop(b, lt.Lab, m.CKM)

	runChunk := func(n int, prefix string) int {
		in, err := NewInput(&genCSV{n: n, prefix: prefix})
		require.NoError(b, err)
		out, err := OpenStream(io.Discard, OutputOptions{Header: d.Header()})
		require.NoError(b, err)
		st, err := Run(ctx, in, out, d, Config{Workers: workers, OnFailure: func(e *RowError) { b.Error(e) }})
		require.NoError(b, err)
		require.NoError(b, out.Close())
		require.Zero(b, st.Failed)
		return st.Written
	}
	// Both once, outside the measure.
	runChunk(64, "warm")
	require.NoError(b, loop.Run(baseline.DeriveWrap, 64))
	// The engine makes the C loop's calls: the native strategy (C_DeriveKey).
	var buf bytes.Buffer
	in, err := NewInput(&genCSV{n: 1, prefix: "chk"})
	require.NoError(b, err)
	out, err := OpenStream(&buf, OutputOptions{Header: d.Header()})
	require.NoError(b, err)
	_, err = Run(ctx, in, out, d, Config{Workers: 1})
	require.NoError(b, err)
	require.NoError(b, out.Close())
	require.Contains(b, buf.String(), ",native,aes-ecb")

	chunk := 4096
	var goTime, cTime time.Duration
	rows := 0
	calls0 := lt.Tok.Calls()
	b.ResetTimer()
	for done, i := 0, 0; done < b.N; i++ {
		k := min(chunk, b.N-done)
		runC := func() {
			t0 := time.Now()
			require.NoError(b, loop.Run(baseline.DeriveWrap, k))
			cTime += time.Since(t0)
		}
		if i%2 == 1 {
			runC()
		}
		t0 := time.Now()
		rows += runChunk(k, fmt.Sprintf("c%d-", i))
		goTime += time.Since(t0)
		if i%2 == 0 {
			runC()
		}
		done += k
	}
	b.StopTimer()
	calls := lt.Tok.Calls() - calls0
	goRate := float64(rows) / goTime.Seconds()
	cRate := float64(b.N) / cTime.Seconds()
	b.ReportMetric(goRate/cRate, "ratio")
	b.ReportMetric(goRate, "rows/s")
	b.ReportMetric(cRate, "C/s")
	b.ReportMetric(float64(calls)/float64(rows), "calls/row")
	b.ReportMetric(0, "ns/op")
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
