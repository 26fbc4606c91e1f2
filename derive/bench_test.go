package derive

import (
	"context"
	"testing"

	"github.com/miekg/pkcs11"
)

// BenchmarkDerive measures one derivation and the destruction of DK, per
// token, strategy and function: derivations per second and PKCS#11 calls
// per derivation (DK's destruction included, as in
// shared/tools/rawderive.c). Strategies a token cannot run are skipped.
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
				base := lt.importKey(b, c.baseCKK, randomBytes(b, c.baseLen))
				data := randomBytes(b, c.data)
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
