package mechanisms

import (
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"
)

// residentBytes is the process's resident set size, from /proc/self/statm
// (Linux), or -1.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}

// settle collects Go garbage and returns freed pages to the OS, so that
// what remains resident is what is live.
func settle() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return residentBytes()
}

// memoryMix are parameters of every type, valid and not, with their
// mechanisms: the values the derive package passes, and larger ones.
func memoryMix() []struct {
	mech uint
	p    Params
} {
	data := make([]byte, 4096)
	return []struct {
		mech uint
		p    Params
	}{
		{pkcs11.CKM_AES_ECB_ENCRYPT_DATA, &KeyDerivationStringData{Data: data[:32]}},
		{pkcs11.CKM_CONCATENATE_BASE_AND_DATA, KeyDerivationStringData{Data: data}},
		{pkcs11.CKM_AES_CBC_ENCRYPT_DATA, &AESCBCEncryptDataParams{Data: data[:64]}},
		{pkcs11.CKM_DES3_CBC_ENCRYPT_DATA, DESCBCEncryptDataParams{Data: data[:24]}},
		{pkcs11.CKM_AES_MAC_GENERAL, MACGeneralParams(16)},
		{pkcs11.CKM_AES_CTR, &AESCTRParams{CounterBits: 128}},
		{CKM_SP800_108_COUNTER_KDF, kdfParams(7)},
		{CKM_SP800_108_FEEDBACK_KDF, &SP800108FeedbackKDFParams{PRFType: pkcs11.CKM_AES_CMAC,
			DataParams: []PRFDataParam{IterationVariable{}, OptionalCounter{Format: CounterFormat{WidthInBits: 8}}, ByteArray(data[:100]),
				DKMLength{Method: CK_SP800_108_DKM_LENGTH_SUM_OF_KEYS, WidthInBits: 32}},
			IV: data[:16], AdditionalDerivedKeys: []DerivedKey{{Template: template("x", 32)}}}},
		{CKM_HKDF_DERIVE, HKDFParams{Extract: true, Expand: true, PRFHashMechanism: pkcs11.CKM_SHA256,
			SaltType: CKF_HKDF_SALT_DATA, Salt: data[:32], Info: data[:200]}},
		// Refused before any allocation.
		{CKM_SP800_108_COUNTER_KDF, SP800108KDFParams{DataParams: []PRFDataParam{ByteArray(data[:8])}}},
		{CKM_HKDF_DERIVE, HKDFParams{}},
		{pkcs11.CKM_AES_CBC_ENCRYPT_DATA, AESCBCEncryptDataParams{Data: data[:15]}},
	}
}

// TestCMemoryFreed runs Call a few hundred thousand times over parameters
// of every type, with an fn that succeeds, fails or panics, and shows the C
// memory behind the parameters freed two ways: the allocator's own count of
// live blocks is back to zero after every call, and the process's resident
// memory stays flat while megabytes of C memory come and go.
// controlRan says TestCMemoryFreed's control ran in this process.
var controlRan atomic.Bool

func TestCMemoryFreed(t *testing.T) {
	rounds := 3000
	if testing.Short() {
		rounds = 500
	}
	mix := memoryMix()
	var cBytes int64
	for _, m := range mix {
		if mm, err := marshal(m.mech, m.p); err == nil {
			cBytes += int64(mm.size)
			mm.free()
		}
	}
	errFn := errors.New("CKR_DEVICE_ERROR")
	one := func(i int) {
		m := mix[i%len(mix)]
		defer func() {
			if r := recover(); r != nil && r != "token exploded" {
				panic(r)
			}
		}()
		before := liveBlocks.Load()
		_ = Call(m.mech, m.p, func(ms []*pkcs11.Mechanism) error {
			switch i % 3 {
			case 1:
				return errFn
			case 2:
				panic("token exploded")
			}
			return nil
		})
		if n := liveBlocks.Load() - before; n != 0 {
			t.Fatalf("call %d (%T): %d C blocks still live", i, m.p, n)
		}
	}
	// Warm up: the Go heap and the C allocator reach their working size.
	for i := 0; i < len(mix)*rounds; i++ {
		one(i)
	}
	start := settle()
	for i := 0; i < len(mix)*rounds; i++ {
		one(i)
	}
	end := settle()
	if n := liveBlocks.Load(); n != 0 {
		t.Errorf("%d C blocks live after the loop", n)
	}
	total := cBytes * int64(rounds)
	t.Logf("%d calls, %.1f MB of C memory allocated and freed; resident %.1f MB before, %.1f MB after",
		len(mix)*rounds, float64(total)/(1<<20), float64(start)/(1<<20), float64(end)/(1<<20))
	if start < 0 || testing.Short() {
		return // no /proc, or too short a loop to tell
	}
	// A leak of the blocks would grow the process by the total; allow a
	// few megabytes of noise.
	if growth := end - start; growth > 4<<20 || growth > total/4 {
		t.Errorf("resident memory grew by %d bytes over the loop (%d bytes of C memory went through Call)", growth, total)
	}

	// The control: the same blocks kept, not freed, for a quarter of the
	// loop, do show in resident memory — once per process: the C allocator
	// keeps the pages of the blocks a control freed, so a second control
	// (go test -count=2 or more) reuses them and resident memory cannot
	// grow (it failed so: 3.9 MB kept, 0.6 MB of growth).
	if controlRan.Swap(true) {
		t.Log("control skipped: an earlier run's control in this process left its freed blocks' pages resident")
		return
	}
	var kept []marshalled
	for i := 0; i < rounds/4; i++ {
		for _, m := range mix {
			if mm, err := marshal(m.mech, m.p); err == nil {
				kept = append(kept, mm)
			}
		}
	}
	leaked := settle()
	for i := range kept {
		kept[i].free()
	}
	t.Logf("control: %.1f MB of blocks kept make resident memory %.1f MB", float64(total/4)/(1<<20), float64(leaked)/(1<<20))
	if leaked-end < total/8 {
		t.Errorf("the control did not show: %d bytes kept, resident memory grew by %d", total/4, leaked-end)
	}
}
