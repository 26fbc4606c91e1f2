package derive

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/p11derive/p11derive/internal/fwd"
	"github.com/p11derive/p11derive/internal/lab"
)

// The call-trace tests run every strategy of every function through
// pkcs11-spy (OpenSC), which logs every PKCS#11 call with its arguments and
// results, and read the log: what crossed the API is what p11derive put on
// the host. With base keys of known value, the software reference computes
// DK; no buffer in the log may hold any block of it.

// spyModule finds OpenSC's pkcs11-spy (Debian package opensc:
// /usr/lib/<multiarch>/pkcs11/pkcs11-spy.so).
func spyModule(t *testing.T) string {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/*/pkcs11/pkcs11-spy.so")
	found = append(found, "/usr/lib/pkcs11/pkcs11-spy.so")
	for _, p := range found {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv(lab.SkipEnv) == "1" {
		t.Skipf("pkcs11-spy.so not found (%s=1)", lab.SkipEnv)
	}
	t.Fatalf("pkcs11-spy.so not found: install the Debian package opensc (or set %s=1 to skip lab tests)", lab.SkipEnv)
	return ""
}

// spied opens the token real through a fresh copy of pkcs11-spy logging
// to a file (a copy is a separate instance, with its own log). It returns
// the Token and the log.
func spied(t *testing.T, real *lab.Token, pin string) (*labToken, *spyLog) {
	t.Helper()
	spy := spyModule(t)
	dir := t.TempDir()
	module := filepath.Join(dir, "pkcs11-spy.so")
	b, err := os.ReadFile(spy)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(module, b, 0o755))
	log := &spyLog{path: filepath.Join(dir, "spy.log"), buf: -1}
	// The spy reads both when it is loaded, which Open does now.
	t.Setenv("PKCS11SPY", real.Module)
	t.Setenv("PKCS11SPY_OUTPUT", log.path)
	tok, err := Open(Config{Module: module, InitArgs: real.InitArgs, Slot: &real.SlotID, PIN: pin})
	require.NoError(t, err)
	t.Cleanup(func() { tok.Close() })
	return &labToken{kind: real.Kind + "+spy", lab: real, tok: tok}, log
}

// spyLog is a pkcs11-spy log file, read as it grows.
type spyLog struct {
	path string
	off  int64     // bytes read so far
	all  []spyCall // the calls read so far
	out  bool      // the direction of the lines being read
	buf  int       // index in the last call's bufs of the buffer being read, or -1
}

// spyCall is one PKCS#11 call as the spy logged it.
type spyCall struct {
	n    int    // the spy's sequence number
	fn   string // "C_Sign"
	rv   string // "CKR_OK"
	text string
	bufs []spyBuf // every hex dump of the call
	// attrsIn are the attribute types of the [in] templates
	// (C_GetAttributeValue: the attributes asked for).
	attrsIn []string
}

// spyBuf is one buffer the spy dumped: an argument, a result or an
// attribute value.
type spyBuf struct {
	out   bool   // a result ([out]) rather than an argument ([in])
	label string // the line naming it: "[out] pSignature[*pulSignatureLen] ..." or an attribute
	data  []byte
}

var (
	spyEntry = regexp.MustCompile(`^([0-9]+): (C_[A-Za-z]+)$`)
	spyDump  = regexp.MustCompile(`^    [0-9a-fA-F]{8}  [0-9A-F]{2}( |$)`)
)

// calls returns every call of the log, reading what was appended since the
// last time. The spy flushes its log at the end of every call.
func (l *spyLog) calls(t *testing.T) []spyCall {
	t.Helper()
	f, err := os.Open(l.path)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.Seek(l.off, 0)
	require.NoError(t, err)
	b, err := io.ReadAll(f)
	require.NoError(t, err)
	n := bytes.LastIndexByte(b, '\n') + 1 // whole lines only
	l.off += int64(n)
	for _, line := range strings.Split(string(b[:n]), "\n") {
		l.line(line)
	}
	return l.all
}

func (l *spyLog) line(line string) {
	if m := spyEntry.FindStringSubmatch(line); m != nil {
		n, _ := strconv.Atoi(m[1])
		l.all = append(l.all, spyCall{n: n, fn: m[2]})
		l.out, l.buf = false, -1
		return
	}
	if len(l.all) == 0 {
		return
	}
	cur := &l.all[len(l.all)-1]
	cur.text += line + "\n"
	switch {
	case strings.HasPrefix(line, "Returned:"):
		f := strings.Fields(line)
		cur.rv = f[len(f)-1]
		l.buf = -1
	case spyDump.MatchString(line):
		if l.buf < 0 {
			cur.bufs = append(cur.bufs, spyBuf{out: l.out, label: "?"})
			l.buf = len(cur.bufs) - 1
		}
		cur.bufs[l.buf].data = append(cur.bufs[l.buf].data, dumpBytes(line)...)
	default:
		if strings.HasPrefix(line, "[in]") {
			l.out = false
		} else if strings.HasPrefix(line, "[out]") {
			l.out = true
		}
		if f := strings.Fields(line); !l.out && len(f) > 0 && strings.HasPrefix(f[0], "CKA_") {
			cur.attrsIn = append(cur.attrsIn, f[0])
		}
		cur.bufs = append(cur.bufs, spyBuf{out: l.out, label: strings.TrimSpace(line)})
		l.buf = len(cur.bufs) - 1
	}
}

// dumpBytes reads the bytes of one hex dump line:
// "    00000010  7A E6 16 ...  ascii".
func dumpBytes(line string) []byte {
	rest := line[14:]
	var out []byte
	for i := 0; i+2 <= len(rest) && len(out) < 16; i += 3 {
		b, err := hex.DecodeString(rest[i : i+2])
		if err != nil {
			break
		}
		out = append(out, b[0])
		if i+2 < len(rest) && rest[i+2] != ' ' {
			break
		}
	}
	return out
}

// results are the result buffers of the call whose label contains name.
func (c *spyCall) buffers(out bool, name string) [][]byte {
	var bs [][]byte
	for _, b := range c.bufs {
		if b.out == out && strings.Contains(b.label, name) && b.data != nil {
			bs = append(bs, b.data)
		}
	}
	return bs
}

// parity clears the low bit of every byte: DES keys are compared modulo
// parity, which tokens set.
func parity(b []byte) []byte {
	out := make([]byte, len(b))
	for i, x := range b {
		out[i] = x & 0xFE
	}
	return out
}

// chunks are DK's 8-byte pieces: any block of DK (8 or 16 bytes) holds one.
func chunks(dk []byte) [][]byte {
	var out [][]byte
	for i := 0; i+8 <= len(dk); i += 8 {
		out = append(out, dk[i:i+8])
	}
	return out
}

// dkLeaks reads the whole log: a C_GetAttributeValue that asks for
// CKA_VALUE, or a buffer, argument or result, that holds an 8-byte piece of
// DK (modulo DES parity), is a leak.
func dkLeaks(calls []spyCall, dk []byte) []string {
	var leaks []string
	pieces := chunks(parity(dk))
	for _, c := range calls {
		if c.fn == "C_GetAttributeValue" && slices.Contains(c.attrsIn, "CKA_VALUE") {
			leaks = append(leaks, fmt.Sprintf("call %d, C_GetAttributeValue asks for CKA_VALUE:\n%s", c.n, c.text))
		}
		for _, b := range c.bufs {
			pb := parity(b.data)
			for _, p := range pieces {
				if bytes.Contains(pb, p) {
					leaks = append(leaks, fmt.Sprintf("call %d %s: %s holds a piece of DK %x:\n%s", c.n, c.fn, b.label, p, c.text))
				}
			}
		}
	}
	return leaks
}

func assertNoDK(t *testing.T, calls []spyCall, dk []byte, what string) {
	t.Helper()
	require.GreaterOrEqual(t, len(dk), 8)
	for _, l := range dkLeaks(calls, dk) {
		t.Errorf("%s: %s", what, l)
	}
}

// traceCase is one strategy computing one function from a known base key.
type traceCase struct {
	st   Strategy
	f    Function
	base string // the base key, by name in the test's keys
	data []byte
	kt   KeyType
}

func (c traceCase) name() string { return string(c.st) + "/" + c.f.Name() + "/" + c.kt.String() }

// traceKey is a base key of known value.
type traceKey struct {
	ckk   uint
	value []byte
}

var traceKeys = map[string]traceKey{
	"aes":     {pkcs11.CKK_AES, lab.Unhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")},
	"des3":    {pkcs11.CKK_DES3, lab.Unhex("0123456789abcdef23456789abcdef01456789abcdef0123")},
	"des":     {pkcs11.CKK_DES, lab.Unhex("133457799bbcdff1")},
	"generic": {pkcs11.CKK_GENERIC_SECRET, lab.Unhex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b5ec2e7c0ffee0042")},
}

// refDK is DK by the software reference: the whole output of the
// function's blocks (DK is its leading kt.n bytes).
func refDK(t *testing.T, c traceCase) []byte {
	k := traceKeys[c.base]
	switch f := c.f.(type) {
	case Encrypt:
		return refEncrypt(t, k.ckk, k.value, f, c.data)
	case Decrypt:
		blk := refBlock(t, k.ckk, k.value)
		n := blk.BlockSize()
		out := make([]byte, len(c.data))
		for i := 0; i < len(c.data); i += n {
			blk.Decrypt(out[i:i+n], c.data[i:i+n])
			if f.Mode == CBC {
				prev := f.IV
				if i > 0 {
					prev = c.data[i-n : i]
				}
				for j := 0; j < n; j++ {
					out[i+j] ^= prev[j]
				}
			}
		}
		return out
	case SP800108:
		return refSP800108(t, f, k.value, c.data, c.kt.n)
	case HKDF:
		out, err := hkdf.Key(sha256.New, k.value, f.Salt, string(c.data), c.kt.n)
		require.NoError(t, err)
		return out
	case SHA256Concat:
		sum := sha256.Sum256(append(append([]byte{}, k.value...), c.data...))
		return sum[:]
	}
	t.Fatalf("no reference for %s", c.f.Name())
	return nil
}

// encryptCases are every exact strategy of every block-cipher function:
// keys of several blocks, so that every strategy runs its loop.
func encryptCases(t *testing.T) []traceCase {
	data := lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52ef")
	iv16 := lab.Unhex("000102030405060708090a0b0c0d0e0f")
	iv8 := lab.Unhex("1234567890abcdef")
	var cs []traceCase
	for _, c := range []struct {
		cipher Cipher
		base   string
		iv     []byte
		kt     KeyType
		n      int // bytes of data
	}{
		{AES, "aes", iv16, KeyAES256, 32},
		{DES3, "des3", iv8, KeyDES3, 24},
		{DES, "des", iv8, KeyDES, 8},
	} {
		for _, mode := range []Mode{ECB, CBC} {
			var iv []byte
			if mode == CBC {
				iv = c.iv
			}
			enc := Encrypt{Cipher: c.cipher, Mode: mode, IV: iv}
			for _, st := range []Strategy{Native, MACUnwrap, CMACUnwrap} {
				if strategyByName(st).computes(enc) {
					cs = append(cs, traceCase{st, enc, c.base, data[:c.n], c.kt})
				}
			}
			cs = append(cs, traceCase{Unwrap, Decrypt{Cipher: c.cipher, Mode: mode, IV: iv}, c.base, data[:c.n], c.kt})
		}
	}
	return cs
}

// kdfCases are the key-derivation functions (native only).
func kdfCases() []traceCase {
	label := []byte("p11derive trace\x00context")
	return []traceCase{
		{Native, SP800108{Mode: SP800108Counter, PRF: HMACSHA256}, "generic", label, KeyAES256},
		{Native, SP800108{Mode: SP800108Counter, PRF: AESCMAC}, "aes", label, KeyAES256},
		{Native, SP800108{Mode: SP800108Feedback, PRF: AESCMAC, IV: lab.Unhex("00112233445566778899aabbccddeeff")}, "aes", label, KeyAES256},
		{Native, HKDF{Hash: SHA256, Salt: []byte("salt")}, "generic", label, KeyAES256},
		{Native, SHA256Concat{}, "generic", label, KeyAES128},
	}
}

// TestCallTraces runs every strategy of every function under pkcs11-spy:
// native, mac-unwrap, cmac-unwrap and unwrap on NSS softoken, native on
// SoftHSM2, stream-unwrap on NSS softoken behind the forwarder that plays
// a token unwrapping in CTR mode. For each derivation the log shows exactly
// res.Calls calls, and nowhere in the log is a piece of DK or a read of a
// CKA_VALUE.
func TestCallTraces(t *testing.T) {
	tokens(t) // NSS initialised by the lab first
	ran := 0
	t.Run("nss", func(t *testing.T) {
		lt, log := spied(t, lab.NSS(t), "")
		ran += traceAll(t, lt, log, append(encryptCases(t), kdfCases()...))

		// The control: a plain C_Encrypt of the data, what p11derive exists
		// not to do, puts DK on the host, and the same check sees it.
		k := traceKeys["aes"]
		base := lt.importKey(t, k.ckk, k.value)
		c := encryptCases(t)[0]
		require.Equal(t, "aes-ecb", c.f.Name())
		before := len(log.calls(t))
		require.NoError(t, withSession(lt.tok, func(ctx *pkcs11.Ctx, s pkcs11.SessionHandle) error {
			if err := ctx.EncryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_ECB, nil)}, base.Handle); err != nil {
				return err
			}
			_, err := ctx.Encrypt(s, c.data)
			return err
		}))
		leaks := dkLeaks(log.calls(t)[before:], refDK(t, c)[:c.kt.n])
		assert.NotEmpty(t, leaks, "a plain C_Encrypt puts DK on the host")
		t.Logf("the control, a plain C_Encrypt, shows %d pieces of DK in the log", len(leaks))
	})
	t.Run("softhsm2", func(t *testing.T) {
		l := lab.SoftHSM2(t)
		l.Setenv(t)
		lt, log := spied(t, l, l.PIN)
		var cs []traceCase
		for _, c := range encryptCases(t) {
			if c.st == Native {
				cs = append(cs, c)
			}
		}
		ran += traceAll(t, lt, log, cs)
	})
	t.Run("nss+fwd/stream-unwrap", func(t *testing.T) {
		w := fwd.Wrap(t, lab.NSS(t), fwd.Config{EmulateStreamUnwrap: true})
		lt, log := spied(t, w, "")
		data := lab.Unhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52ef")
		ran += traceAll(t, lt, log, []traceCase{
			{StreamUnwrap, Encrypt{Cipher: AES, Mode: ECB}, "aes", data, KeyGeneric(48)},
			{StreamUnwrap, Encrypt{Cipher: AES, Mode: CBC, IV: lab.Unhex("000102030405060708090a0b0c0d0e0f")}, "aes", data[:16], KeyAES128},
		})
	})
	t.Logf("%d derivations traced", ran)
}

// traceAll imports the known base keys, runs each case under the spy and
// checks its trace. Cases the token refuses (CKR_MECHANISM_INVALID, ...)
// are skipped, and said so.
func traceAll(t *testing.T, lt *labToken, log *spyLog, cases []traceCase) int {
	ctx := context.Background()
	bases := map[string]*Key{}
	for name, k := range traceKeys {
		bases[name] = lt.importKey(t, k.ckk, k.value)
	}
	ran := 0
	dks := map[string][]byte{}
	for _, c := range cases {
		t.Run(c.name(), func(t *testing.T) {
			base := bases[c.base]
			r := Request{Function: c.f, Data: c.data, KeyType: c.kt, Strategy: c.st}
			// A first derivation pools a session: the traced one makes only
			// its own calls.
			warm, err := lt.tok.Derive(ctx, base, r)
			if refused(err) {
				// Not every token runs every mechanism: said, not hidden.
				t.Skipf("%s refuses: %v", lt.kind, err)
			}
			require.NoError(t, err)
			require.NoError(t, lt.tok.Destroy(ctx, warm.Key))

			before := len(log.calls(t))
			res, err := lt.tok.Derive(ctx, base, r)
			require.NoError(t, err)
			calls := log.calls(t)
			mine := calls[before:]
			var fns []string
			for _, c := range mine {
				fns = append(fns, c.fn)
				assert.Equal(t, "CKR_OK", c.rv, "call %d %s", c.n, c.fn)
			}
			assert.Equal(t, res.Calls, len(mine), "the log shows %v", fns)
			t.Logf("%d calls: %s", len(mine), strings.Join(fns, " "))

			full := refDK(t, c)
			dk := full[:c.kt.n]
			kcv, err := lt.tok.CheckValue(ctx, res.Key)
			if err == nil {
				assert.Equal(t, hex.EncodeToString(refKCV(t, c.kt, dk)), hex.EncodeToString(kcv), "DK is not what the reference says")
			} else {
				assertHMAC(t, lt, res.Key, dk)
			}
			require.NoError(t, lt.tok.Destroy(ctx, res.Key))
			checkStrategyTrace(t, c, mine, full)
			dks[c.name()] = dk
			ran++
		})
	}
	// The whole log, every derivation and the tests' own calls included,
	// holds no piece of any DK.
	calls := log.calls(t)
	for name, dk := range dks {
		assertNoDK(t, calls, dk, name)
	}
	t.Logf("%d calls in the log, none with a piece of any of the %d DKs", len(calls), len(dks))
	return ran
}

// checkStrategyTrace checks what each strategy puts on the host, block by
// block, against the reference.
func checkStrategyTrace(t *testing.T, c traceCase, mine []spyCall, full []byte) {
	k := traceKeys[c.base]
	var results, signs, encrypts, unwrapped [][]byte
	for _, call := range mine {
		switch call.fn {
		case "C_Sign":
			signs = append(signs, call.buffers(true, "pSignature")...)
		case "C_Encrypt":
			encrypts = append(encrypts, call.buffers(true, "pEncryptedData")...)
		case "C_UnwrapKey":
			unwrapped = append(unwrapped, call.buffers(false, "pWrappedKey")...)
		case "C_WrapKey", "C_Decrypt", "C_Digest", "C_SignFinal", "C_EncryptFinal", "C_EncryptUpdate":
			t.Errorf("%s called: no strategy needs it", call.fn)
		}
		for _, b := range call.bufs {
			// Attribute values of fixed size (CK_ULONG, CK_BBOOL) are no
			// key material.
			if b.out && !(strings.HasPrefix(b.label, "CKA_") && len(b.data) <= 8) {
				results = append(results, b.data)
			}
		}
	}
	switch c.st {
	case Native:
		assert.Empty(t, signs)
		assert.Empty(t, encrypts)
		assert.Empty(t, unwrapped)
	case MACUnwrap, CMACUnwrap:
		// The host sees w_i = E_K(c_i): DK's blocks encrypted under K,
		// the wrapped form C_UnwrapKey takes — and, with CMAC, L = E_K(0),
		// K's own check value block, to make the CMAC subkey. Neither is
		// a block of DK.
		blk := refBlock(t, k.ckk, k.value)
		n := blk.BlockSize()
		nb := blocksFor(c.f.(Encrypt).Cipher, c.kt)
		var want [][]byte
		for i := 0; i < nb; i++ {
			w := make([]byte, n)
			blk.Encrypt(w, full[i*n:(i+1)*n])
			want = append(want, w)
		}
		assert.Equal(t, hexes(want), hexes(signs), "C_Sign gives E_K(c_i), DK encrypted under K")
		assert.Equal(t, []string{hex.EncodeToString(bytes.Join(want, nil))}, hexes(unwrapped), "C_UnwrapKey takes w_1 || ... || w_k")
		if c.st == CMACUnwrap {
			l := make([]byte, n)
			blk.Encrypt(l, l)
			assert.Equal(t, []string{hex.EncodeToString(l)}, hexes(encrypts), "C_Encrypt gives L = E_K(0) only")
			for i := 0; i < nb; i++ {
				assert.NotEqual(t, l, full[i*n:(i+1)*n], "L is not a block of DK")
			}
		} else {
			assert.Empty(t, encrypts)
		}
	case Unwrap:
		n := refBlock(t, k.ckk, k.value).BlockSize()
		nb := blocksFor(c.f.(Decrypt).Cipher, c.kt)
		assert.Equal(t, []string{hex.EncodeToString(c.data[:nb*n])}, hexes(unwrapped), "C_UnwrapKey takes the public data")
	case StreamUnwrap:
		for _, u := range unwrapped {
			assert.Equal(t, make([]byte, 16), u, "stream-unwrap unwraps the zero block")
		}
	}
	// Every result on the host is a handle, an attribute of fixed size, or
	// one of the blocks above: nothing else the length of a block.
	allowed := map[string]bool{}
	for _, b := range append(append(signs, encrypts...), unwrapped...) {
		allowed[hex.EncodeToString(b)] = true
	}
	for _, r := range results {
		if len(r) >= 8 && !allowed[hex.EncodeToString(r)] {
			t.Errorf("unexpected result on the host: %x", r)
		}
	}
}

func hexes(bs [][]byte) []string {
	out := []string{}
	for _, b := range bs {
		out = append(out, hex.EncodeToString(b))
	}
	return out
}

// TestSpyLogParser checks the parser on a log excerpt of pkcs11-spy 0.23.
func TestSpyLogParser(t *testing.T) {
	const excerpt = `

*************** OpenSC PKCS#11 spy *****************
Loaded: "/usr/lib/softhsm/libsofthsm2.so"

14: C_Encrypt
2026-11-27 06:21:17.982
[in] hSession = 0x1
[in] pData[ulDataLen] 00007ffe3c1dc1d0 / 20
    00000000  00 11 22 33 44 55 66 77 88 99 AA BB CC DD EE FF  .."3DUfw........
    00000010  41 42 20 20                                      AB  
[out] pEncryptedData[*pulEncryptedDataLen] 00007ffe3c1dc5d0 / 16
    00000000  09 EE 3D 19 E4 CA 1F AF 98 87 79 A6 B1 2F 0F A3  ..=.......y../..
Returned:  0 CKR_OK

86: C_GetAttributeValue
2026-11-27 06:21:17.966
[in] hSession = 0x1
[in] hObject = 0x2
[in] pTemplate[2]: 
    CKA_VALUE             0000557ca2d5bed0 / 16
    CKA_VALUE_LEN         00007ffcf4cdd7c8 / 8
[out] pTemplate[1]: 
    CKA_VALUE             0000557ca2d5bed0 / 16
    00000000  7A E6 16 DA C0 98 FC 3C F6 32 F3 5D 94 93 51 99  z......<.2.]..Q.
Returned:  0 CKR_OK
`
	path := filepath.Join(t.TempDir(), "spy.log")
	require.NoError(t, os.WriteFile(path, []byte(excerpt), 0o600))
	calls := (&spyLog{path: path, buf: -1}).calls(t)
	require.Len(t, calls, 2)
	assert.Equal(t, 14, calls[0].n)
	assert.Equal(t, "C_Encrypt", calls[0].fn)
	assert.Equal(t, "CKR_OK", calls[0].rv)
	assert.Equal(t, [][]byte{lab.Unhex("00112233445566778899aabbccddeeff41422020")}, calls[0].buffers(false, "pData"))
	assert.Equal(t, [][]byte{lab.Unhex("09ee3d19e4ca1faf988779a6b12f0fa3")}, calls[0].buffers(true, "pEncryptedData"))
	assert.Equal(t, []string{"CKA_VALUE", "CKA_VALUE_LEN"}, calls[1].attrsIn)
	assert.Equal(t, [][]byte{lab.Unhex("7ae616dac098fc3cf632f35d94935199")}, calls[1].buffers(true, "CKA_VALUE"))

	// And the leak check catches what it looks for.
	assert.Empty(t, dkLeaks(calls[:1], lab.Unhex("0102030405060708")))
	assert.Len(t, dkLeaks(calls[:1], lab.Unhex("09ee3d19e4ca1faf")), 1, "a piece of DK in a result")
	assert.Len(t, dkLeaks(calls[:1], lab.Unhex("0011223344556677")), 1, "a piece of DK in an argument")
	assert.Len(t, dkLeaks(calls[:1], lab.Unhex("08ef3c18e5cb1eae")), 1, "modulo parity")
	assert.Len(t, dkLeaks(calls[1:], lab.Unhex("0102030405060708")), 1, "a read of CKA_VALUE")
}
