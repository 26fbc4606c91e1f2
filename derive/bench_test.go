package derive

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/baseline"
	"github.com/p11derive/p11derive/internal/lab"
)

// BenchmarkDerive measures one derivation and the destruction of DK, per
// token, strategy and function: derivations per second and PKCS#11 calls
// per derivation (DK's destruction included, as in internal/baseline's C
// loop). Strategies a token cannot run are skipped.
func BenchmarkDerive(b *testing.B) {
	for _, lt := range tokens(b) {
		for _, c := range []struct {
			name    string
			st      Strategy
			f       Function
			baseCKK uint
			baseLen int
			data    int
			out     KeyType
		}{
			{"aes-ecb", Native, Encrypt{Cipher: AES, Mode: ECB}, pkcs11.CKK_AES, 16, 16, KeyAES128},
			{"aes-cbc-2blocks", Native, Encrypt{Cipher: AES, Mode: CBC, IV: make([]byte, 16)}, pkcs11.CKK_AES, 32, 32, KeyAES256},
			{"des3-ecb", Native, Encrypt{Cipher: DES3, Mode: ECB}, pkcs11.CKK_DES3, 24, 16, KeyDES2},
			{"aes-ecb", MACUnwrap, Encrypt{Cipher: AES, Mode: ECB}, pkcs11.CKK_AES, 16, 16, KeyAES128},
			{"aes-cbc-2blocks", MACUnwrap, Encrypt{Cipher: AES, Mode: CBC, IV: make([]byte, 16)}, pkcs11.CKK_AES, 32, 32, KeyAES256},
			{"des3-ecb", MACUnwrap, Encrypt{Cipher: DES3, Mode: ECB}, pkcs11.CKK_DES3, 24, 16, KeyDES2},
			{"aes-ecb", CMACUnwrap, Encrypt{Cipher: AES, Mode: ECB}, pkcs11.CKK_AES, 16, 16, KeyAES128},
			{"aes-ecb-decrypt", Unwrap, Decrypt{Cipher: AES, Mode: ECB}, pkcs11.CKK_AES, 16, 16, KeyAES128},
		} {
			b.Run(lt.kind+"/"+string(c.st)+"/"+c.name, func(b *testing.B) {
				ctx := context.Background()
				base := lt.importKey(b, c.baseCKK, lab.Random(b, c.baseLen))
				data := lab.Random(b, c.data)
				r := Request{Function: c.f, Data: data, KeyType: c.out, Strategy: c.st}
				if res, err := lt.tok.Derive(ctx, base, r); err != nil {
					b.Skipf("%s does not run here: %v", c.st, err)
				} else {
					lt.tok.Destroy(ctx, res.Key)
				}
				calls := 0
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					data[0], data[1] = byte(i), byte(i>>8)
					res, err := lt.tok.Derive(ctx, base, r)
					if err != nil {
						b.Fatal(err)
					}
					if err := lt.tok.Destroy(ctx, res.Key); err != nil {
						b.Fatal(err)
					}
					calls += res.Calls + 1
				}
				b.ReportMetric(float64(calls)/float64(b.N), "calls/op")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "derivations/s")
			})
		}
	}
}

// BenchmarkOverhead measures p11derive's own overhead: Token.Derive and
// Token.Destroy on NSS softoken's crypto slot against a C loop making the
// same PKCS#11 calls on the same token (internal/baseline: the derivation,
// one C_GetAttributeValue of the attributes p11derive reads back, the
// destruction), in one run, interleaved in chunks so that both see the
// same machine. It reports ratio (p11derive's derivations/s over the C
// loop's), both rates, and allocs/derivation (p11derive's, the whole of
// Derive and Destroy); and ratio-C1, against the same C loop entered once
// per derivation (C1/s): the ceiling of any Go caller of a C loop body,
// one cgo crossing per derivation.
func BenchmarkOverhead(b *testing.B) {
	var lt *labToken
	for _, x := range tokens(b) {
		if x.kind == "nss" {
			lt = x
		}
	}
	key := lab.Random(b, 16)
	for _, c := range []struct {
		name string
		st   Strategy
		mode baseline.Mode
	}{
		{"native", Native, baseline.Derive},
		{"mac-unwrap", MACUnwrap, baseline.MACUnwrap},
		{"cmac-unwrap", CMACUnwrap, baseline.CMACUnwrap},
	} {
		b.Run(c.name+"/aes-ecb", func(b *testing.B) {
			ctx := context.Background()
			base := lt.importKey(b, pkcs11.CKK_AES, key)
			data := lab.Random(b, 16)
			r := Request{Function: Encrypt{Cipher: AES, Mode: ECB}, Data: data, KeyType: KeyAES128, Strategy: c.st}
			n := len(ownKeyAttrs) + 1 // AES: CKA_VALUE_LEN too
			loop, err := baseline.Open(lt.lab.Module, lt.lab.InitArgs, lt.lab.SlotID, "", key, data,
				lt.tok.template(&r), ownKeyAttrsWithLen[:n], ownKeyAttrSizes[:n])
			require.NoError(b, err)
			defer loop.Close()
			// Both once, outside the measure: the same key from both.
			res, err := lt.tok.Derive(ctx, base, r)
			require.NoError(b, err)
			require.NoError(b, lt.tok.Destroy(ctx, res.Key))
			require.NoError(b, loop.Run(c.mode, 1))

			const chunk = 256
			var goTime, cTime, c1Time time.Duration
			var mallocs uint64
			var ms runtime.MemStats
			b.ResetTimer()
			for done := 0; done < b.N; {
				k := min(chunk, b.N-done)
				// The C loop first in odd chunks, second in even ones.
				runC := func() {
					t0 := time.Now()
					if err := loop.Run(c.mode, k); err != nil {
						b.Fatal(err)
					}
					cTime += time.Since(t0)
				}
				if done/chunk%2 == 1 {
					runC()
				}
				runtime.ReadMemStats(&ms)
				before := ms.Mallocs
				t0 := time.Now()
				for i := done; i < done+k; i++ {
					data[0], data[1] = byte(i), byte(i>>8)
					res, err := lt.tok.Derive(ctx, base, r)
					if err != nil {
						b.Fatal(err)
					}
					if err := lt.tok.Destroy(ctx, res.Key); err != nil {
						b.Fatal(err)
					}
				}
				goTime += time.Since(t0)
				runtime.ReadMemStats(&ms)
				mallocs += ms.Mallocs - before
				if done/chunk%2 == 0 {
					runC()
				}
				// The C loop again, one derivation per cgo crossing: what
				// any Go caller of a C library pays at least.
				t0 = time.Now()
				for i := 0; i < k; i++ {
					if err := loop.Run(c.mode, 1); err != nil {
						b.Fatal(err)
					}
				}
				c1Time += time.Since(t0)
				done += k
			}
			goRate := float64(b.N) / goTime.Seconds()
			cRate := float64(b.N) / cTime.Seconds()
			c1Rate := float64(b.N) / c1Time.Seconds()
			b.ReportMetric(goRate/cRate, "ratio")
			b.ReportMetric(goRate/c1Rate, "ratio-C1")
			b.ReportMetric(goRate, "p11derive/s")
			b.ReportMetric(cRate, "C/s")
			b.ReportMetric(c1Rate, "C1/s")
			b.ReportMetric(float64(mallocs)/float64(b.N), "allocs/derivation")
			b.ReportMetric(0, "ns/op")
		})
	}
}
