package dukpt_test

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/bits"
	"os"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/derive"
	"github.com/p11derive/p11derive/derive/dukpt"
	"github.com/p11derive/p11derive/derive/internal/schemetest"
	"github.com/p11derive/p11derive/derive/scheme"
	"github.com/p11derive/p11derive/internal/lab"
	"github.com/p11derive/p11derive/internal/labtok"
)

func TestMain(m *testing.M) { os.Exit(lab.Main(m)) }

var unhex = lab.Unhex

// The ANSI X9.24-3-2017 supplement test vectors ("X9.24 Part 3 Test
// Vectors", x9.org), as reproduced in openemv/dukpt
// test/dukpt_aes128_test.c and test/dukpt_aes256_test.c (commit
// 1d01ddafa9dac103f4eee2ad1b20483596d83012; page references are theirs).
const ikid = "1234567890123456"

type txnVector struct {
	counter uint32
	txn     string            // transaction key
	working map[string]string // "usage/type" → working key
}

var aes128Vectors = struct {
	bdk, ik string
	txns    []txnVector
}{
	bdk: "FEDCBA9876543210F1F1F1F1F1F1F1F1",
	ik:  "1273671EA26AC29AFA4D1084127652A1",
	txns: []txnVector{
		// "first eight transaction/derivation keys", "PIN keys", "MAC
		// generation keys", "data encryption keys" (middle of page 2).
		{1, "4F21B565BAD9835E112B6465635EAE44", map[string]string{
			"pin/aes128":  "AF8CB133A78F8DC2D1359F18527593FB",
			"mac/aes128":  "A2DC23DE6FDE0824A2BC321E08E4B8B7",
			"data/aes128": "A35C412EFD41FDB98B69797C02DCD08F",
		}},
		{2, "2F34D68DE10F68D38091A73B9E7C437C", map[string]string{
			"pin/aes128":  "D30BDC73EC9714B000BEC66BDB7B6D09",
			"mac/aes128":  "484C3B06E8562704528CD5B46FB12FB6",
			"data/aes128": "D639514AA33AC43AD9229E433D6D4E5B",
		}},
		{8, "718EE6CF0B27E53D5F7AF99C4D8146A2", map[string]string{
			"pin/aes128": "4D9DF3FBEE3448FC3E676D04320A90F5",
		}},
		// Transaction counter 0x1fffe: 16 bits set (page 5).
		{0x0001FFFE, "E21E8C8D347F8561A2BE752DAA85A111", nil},
		{0x00020000, "F7AE9025468A25D37B7249CFFED224C8", nil},
		// The last transaction counter (middle of page 6).
		{0xFFFF0000, "F6BA59389BD14A9855BE9727E7C52E3C", nil},
	},
}

var aes256Vectors = struct {
	bdk, ik string
	txns    []txnVector
}{
	bdk: "FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210F1F1F1F1F1F1F1F1",
	ik:  "CE9CE0C101D1138F97FB6CAD4DF045A7083D4EAE2D35A31789D01CCF0949550F",
	txns: []txnVector{
		// Bottom of page 7 (AES-128 working keys) and middle of page 13
		// (AES-256 working keys).
		{1, "54AC2B32B145EA4A554CB8BC44B17467063A799856B1CCC2A138D36E8DBF78B3", map[string]string{
			"pin/aes128":  "09C9C432966811D6B2C3336BAC1B1202",
			"mac/aes128":  "F04A1FABD4176E15490CEC82E217A96D",
			"data/aes128": "616D59AE91F8CC7016F89FDA29605FA4",
			"pin/aes256":  "8C1AB7BEE973829E30242E0BBBDD4946D540C98FC1B5BDCF94790001A23FD502",
			"mac/aes256":  "61DABDF4B340CF461EE860B1D1AB55357142BD2D69773068" + "59CF49AEFE8F1549",
			"data/aes256": "71EB36C9A6B7F801D1D1700C29741FC5A5C4E9B45D742DA7AF6992B8AA29AF58",
		}},
		// Page 10.
		{0x0001FFFE, "A289508CBF1228452CD86AB77B15CB35577AC828C18BB66681E5A16D6C9CCED3", nil},
	},
}

var usages = map[string]dukpt.KeyUsage{"pin": dukpt.PINEncryption, "mac": dukpt.MACGeneration, "data": dukpt.DataEncryption}

func splitWorking(s string) (dukpt.KeyUsage, dukpt.KeyType) {
	for i := range s {
		if s[i] == '/' {
			kt, ok := dukpt.KeyTypeByName(s[i+1:])
			if !ok {
				panic(s)
			}
			return usages[s[:i]], kt
		}
	}
	panic(s)
}

func ksn(counter uint32) []byte {
	return binary.BigEndian.AppendUint32(unhex(ikid), counter)
}

// refDerive is §6.3.1 in software: AES-ECB of the derivation data.
func refDerive(t *testing.T, key []byte, u dukpt.KeyUsage, kt dukpt.KeyType, id []byte) []byte {
	out := schemetest.ECB(schemetest.Block(t, pkcs11.CKK_AES, key), dukpt.DerivationData(u, kt, id))
	return out[:kt.DeriveKeyType().Len()]
}

func aesType(n int) dukpt.KeyType {
	return map[int]dukpt.KeyType{16: dukpt.AES128, 24: dukpt.AES192, 32: dukpt.AES256}[n]
}

func refTxn(t *testing.T, ik []byte, counter uint32) []byte {
	key, working := ik, uint32(0)
	for mask := uint32(1) << 31; mask != 0; mask >>= 1 {
		if counter&mask != 0 {
			working |= mask
			id := binary.BigEndian.AppendUint32(unhex(ikid)[4:8:8], working)
			key = refDerive(t, key, dukpt.KeyDerivation, aesType(len(ik)), id)
		}
	}
	return key
}

func TestReferenceReproducesPublishedVectors(t *testing.T) {
	for _, set := range []struct {
		bdk, ik string
		txns    []txnVector
	}{aes128Vectors, aes256Vectors} {
		bdk := unhex(set.bdk)
		ik := refDerive(t, bdk, dukpt.InitialKeyUsage, aesType(len(bdk)), unhex(ikid))
		require.Equal(t, set.ik, hexU(ik))
		for _, v := range set.txns {
			txn := refTxn(t, ik, v.counter)
			assert.Equal(t, v.txn, hexU(txn), "counter %#x", v.counter)
			for name, want := range v.working {
				u, kt := splitWorking(name)
				id := binary.BigEndian.AppendUint32(unhex(ikid)[4:8:8], v.counter)
				assert.Equal(t, want, hexU(refDerive(t, txn, u, kt, id)), "counter %#x %s", v.counter, name)
			}
		}
	}
}

func hexU(b []byte) string {
	s := hex.EncodeToString(b)
	out := []byte(s)
	for i, c := range out {
		if c >= 'a' && c <= 'f' {
			out[i] = c - 'a' + 'A'
		}
	}
	return string(out)
}

var encrypt = scheme.Options{Usage: derive.UseDerive | derive.UseEncrypt}

// TestPublishedVectors reproduces the supplement's keys through the public
// API on every lab token: the BDK is imported with its published value, the
// keys are derived inside the token (intermediates destroyed), and their
// check values, computed in the token, are compared with those of the
// published keys.
func TestPublishedVectors(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		for _, set := range []struct {
			name    string
			bdk, ik string
			txns    []txnVector
		}{{"aes128", aes128Vectors.bdk, aes128Vectors.ik, aes128Vectors.txns}, {"aes256", aes256Vectors.bdk, aes256Vectors.ik, aes256Vectors.txns}} {
			t.Run(set.name, func(t *testing.T) {
				bdk := lt.Base(t, pkcs11.CKK_AES, unhex(set.bdk))

				// Initial key: one derivation.
				objects := lt.Objects(t)
				ik, err := dukpt.InitialKey(ctx, lt.Tok, bdk, unhex(ikid), encrypt)
				require.NoError(t, err)
				defer lt.Tok.Destroy(ctx, ik.Key)
				assert.Equal(t, objects+1, lt.Objects(t))
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(set.ik)), lt.KCV(t, ik.Key), "IK")
				t.Logf("%s %s: initial key: strategy %s, %d calls", lt.Kind, set.name, ik.Strategy, ik.Calls)

				for _, v := range set.txns {
					// Transaction key from the IK: one derivation per bit of
					// the counter, the intermediates destroyed.
					objects := lt.Objects(t)
					txn, err := dukpt.TransactionKey(ctx, lt.Tok, ik.Key, ksn(v.counter), encrypt)
					require.NoError(t, err)
					assert.Equal(t, objects+1, lt.Objects(t), "the intermediates are destroyed")
					assert.Equal(t, bits.OnesCount32(v.counter), txn.Derivations)
					assert.Equal(t, 3*txn.Derivations-1, txn.Calls, "b derivations of 2 calls, b-1 destructions")
					assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(v.txn)), lt.KCV(t, txn.Key), "transaction key %#x", v.counter)
					t.Logf("%s %s: transaction key %#x (%d bits): %d calls", lt.Kind, set.name, v.counter, txn.Derivations, txn.Calls)

					for name, want := range v.working {
						u, kt := splitWorking(name)
						// From the transaction key ...
						wk, err := dukpt.WorkingKey(ctx, lt.Tok, txn.Key, ksn(v.counter), u, kt, scheme.Options{})
						require.NoError(t, err, name)
						assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(want)), lt.KCV(t, wk.Key), "%#x %s", v.counter, name)
						require.NoError(t, lt.Tok.Destroy(ctx, wk.Key))
						// ... and from the BDK, as a receiving host does.
						objects := lt.Objects(t)
						wk, err = dukpt.DeriveWorkingKey(ctx, lt.Tok, bdk, ksn(v.counter), u, kt, scheme.Options{})
						require.NoError(t, err, name)
						assert.Equal(t, objects+1, lt.Objects(t), "only the working key is left")
						assert.Equal(t, 2+bits.OnesCount32(v.counter), wk.Derivations)
						assert.Len(t, wk.Strategies, wk.Derivations)
						assert.Equal(t, 3*bits.OnesCount32(v.counter)+5, wk.Calls, "b+2 derivations of 2 calls, b+1 destructions")
						assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(want)), lt.KCV(t, wk.Key), "%#x %s from the BDK", v.counter, name)
						if v.counter == 1 && name == "pin/aes128" {
							t.Logf("%s %s: BDK → working key, counter 1: %d derivations, %d calls", lt.Kind, set.name, wk.Derivations, wk.Calls)
						}
						require.NoError(t, lt.Tok.Destroy(ctx, wk.Key))
					}
					require.NoError(t, lt.Tok.Destroy(ctx, txn.Key))
				}

				// BDK → transaction key.
				objects = lt.Objects(t)
				v := set.txns[len(set.txns)-1]
				txn, err := dukpt.DeriveTransactionKey(ctx, lt.Tok, bdk, ksn(v.counter), encrypt)
				require.NoError(t, err)
				assert.Equal(t, objects+1, lt.Objects(t))
				assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(v.txn)), lt.KCV(t, txn.Key))
				require.NoError(t, lt.Tok.Destroy(ctx, txn.Key))
			})
		}
	})
}

// TestOtherWorkingKeyTypes: TDES and HMAC working keys, against the
// reference (the supplement publishes AES ones only).
func TestOtherWorkingKeyTypes(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		bdkv := unhex(aes256Vectors.bdk)
		bdk := lt.Base(t, pkcs11.CKK_AES, bdkv)
		ik := refDerive(t, bdkv, dukpt.InitialKeyUsage, dukpt.AES256, unhex(ikid))
		txn := refTxn(t, ik, 5)
		id := binary.BigEndian.AppendUint32(unhex(ikid)[4:8:8], 5)
		for _, kt := range []dukpt.KeyType{dukpt.TDES2, dukpt.TDES3, dukpt.AES192, dukpt.HMAC256} {
			wk, err := dukpt.DeriveWorkingKey(ctx, lt.Tok, bdk, ksn(5), dukpt.DataBoth, kt, scheme.Options{})
			require.NoError(t, err, kt.String())
			want := refDerive(t, txn, dukpt.DataBoth, kt, id)
			if kt == dukpt.HMAC256 {
				msg := []byte("p11derive")
				got := lt.Sign(t, wk.Key, pkcs11.CKM_SHA256_HMAC, msg)
				assert.Equal(t, hmacSHA256(want, msg), got)
			} else {
				ckk := map[dukpt.KeyType]uint{dukpt.TDES2: pkcs11.CKK_DES2, dukpt.TDES3: pkcs11.CKK_DES3, dukpt.AES192: pkcs11.CKK_AES}[kt]
				assert.Equal(t, schemetest.RefKCV(t, ckk, want), lt.KCV(t, wk.Key), kt.String())
			}
			require.NoError(t, lt.Tok.Destroy(ctx, wk.Key))
		}
	})
}

// TestNothingLeftBehind: a failure anywhere along the path — the token
// refusing the first step, or the context cancelled after any number of
// checks, with intermediates in the token — leaves nothing behind.
func TestNothingLeftBehind(t *testing.T) {
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		bdk := lt.Base(t, pkcs11.CKK_AES, unhex(aes128Vectors.bdk))
		objects := lt.Objects(t)
		// mac-unwrap cannot run with a base key that only derives.
		_, err := dukpt.DeriveWorkingKey(context.Background(), lt.Tok, bdk, ksn(0x0001FFFE), dukpt.PINEncryption, dukpt.AES128,
			scheme.Options{Strategy: derive.Strategy("mac-unwrap")})
		require.Error(t, err)
		assert.Equal(t, objects, lt.Objects(t))

		// Cancel after n context checks, for every n until the
		// derivation (18 keys, 17 of them intermediates) succeeds.
		for n := int32(0); ; n++ {
			ctx := &cancelAfter{Context: context.Background()}
			ctx.n.Store(n)
			wk, err := dukpt.DeriveWorkingKey(ctx, lt.Tok, bdk, ksn(0x0001FFFE), dukpt.PINEncryption, dukpt.AES128, scheme.Options{})
			if err == nil {
				assert.Equal(t, objects+1, lt.Objects(t))
				require.NoError(t, lt.Tok.Destroy(context.Background(), wk.Key))
				require.Greater(t, n, int32(17), "cancellation must have been seen at every step")
				return
			}
			require.ErrorIs(t, err, context.Canceled)
			require.Equal(t, objects, lt.Objects(t), "cancelled after %d checks", n)
		}
	})
}

// cancelAfter is a context that is done after n calls of Done.
type cancelAfter struct {
	context.Context
	n atomic.Int32
}

var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *cancelAfter) Done() <-chan struct{} {
	if c.n.Add(-1) < 0 {
		return closed
	}
	return nil
}

func (c *cancelAfter) Err() error {
	if c.n.Load() < 0 {
		return context.Canceled
	}
	return nil
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		bdk := lt.Base(t, pkcs11.CKK_AES, unhex(aes128Vectors.bdk))
		des2 := lt.Base(t, pkcs11.CKK_DES2, unhex(aes128Vectors.bdk))
		objects := lt.Objects(t)
		for _, c := range []struct {
			name string
			err  error
			want error
		}{
			{"ikid of 7 bytes", second(dukpt.InitialKey(ctx, lt.Tok, bdk, make([]byte, 7), scheme.Options{})), derive.ErrInvalidInput},
			{"TDES BDK", second(dukpt.InitialKey(ctx, lt.Tok, des2, make([]byte, 8), scheme.Options{})), derive.ErrKeyType},
			{"KSN of 10 bytes", second(dukpt.TransactionKey(ctx, lt.Tok, bdk, make([]byte, 10), scheme.Options{})), derive.ErrInvalidInput},
			{"counter 0", second(dukpt.TransactionKey(ctx, lt.Tok, bdk, ksn(0), scheme.Options{})), derive.ErrInvalidInput},
			{"counter with 17 bits set", second(dukpt.TransactionKey(ctx, lt.Tok, bdk, ksn(0x0001FFFF), scheme.Options{})), derive.ErrInvalidInput},
			{"working key stronger than its base", second(dukpt.WorkingKey(ctx, lt.Tok, bdk, ksn(1), dukpt.PINEncryption, dukpt.AES256, scheme.Options{})), derive.ErrInvalidInput},
			{"derivation usage as a working key", second(dukpt.DeriveWorkingKey(ctx, lt.Tok, bdk, ksn(1), dukpt.KeyDerivation, dukpt.AES128, scheme.Options{})), derive.ErrInvalidInput},
		} {
			require.Error(t, c.err, c.name)
			assert.True(t, errors.Is(c.err, c.want), "%s: %v", c.name, c.err)
		}
		assert.Equal(t, objects, lt.Objects(t))
	})
}

func second(_ *scheme.Result, err error) error { return err }

// TestWorkingKeyFromIK: the device's derivation from its stored initial
// key (the supplement's IK 1273671E…) to the published working keys, with
// only the working key left in the token; cancelled after any number of
// context checks, nothing at all.
func TestWorkingKeyFromIK(t *testing.T) {
	labtok.ForEach(t, func(t *testing.T, lt *labtok.Token) {
		ik := lt.Base(t, pkcs11.CKK_AES, unhex(aes128Vectors.ik))
		objects := lt.Objects(t)
		for _, c := range []struct {
			tc   uint32
			u    dukpt.KeyUsage
			want string
		}{
			{1, dukpt.PINEncryption, aes128Vectors.txns[0].working["pin/aes128"]},
			{2, dukpt.MACGeneration, aes128Vectors.txns[1].working["mac/aes128"]},
			{8, dukpt.PINEncryption, aes128Vectors.txns[2].working["pin/aes128"]},
		} {
			require.NotEmpty(t, c.want)
			wk, err := dukpt.WorkingKeyFromIK(context.Background(), lt.Tok, ik, ksn(c.tc), c.u, dukpt.AES128, scheme.Options{Usage: derive.UseEncrypt})
			require.NoError(t, err)
			assert.Equal(t, objects+1, lt.Objects(t), "the working key and nothing else")
			assert.Equal(t, schemetest.RefKCV(t, pkcs11.CKK_AES, unhex(c.want)), lt.KCV(t, wk.Key), "counter %d", c.tc)
			require.NoError(t, lt.Tok.Destroy(context.Background(), wk.Key))
		}
		for n := int32(0); ; n++ {
			ctx := &cancelAfter{Context: context.Background()}
			ctx.n.Store(n)
			wk, err := dukpt.WorkingKeyFromIK(ctx, lt.Tok, ik, ksn(0x0001FFFE), dukpt.PINEncryption, dukpt.AES128, scheme.Options{})
			if err == nil {
				require.NoError(t, lt.Tok.Destroy(context.Background(), wk.Key))
				require.Greater(t, n, int32(16))
				break
			}
			require.ErrorIs(t, err, context.Canceled)
			require.Equal(t, objects, lt.Objects(t), "cancelled after %d checks", n)
		}
	})
}
