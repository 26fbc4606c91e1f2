package lab

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NSSDBInstance returns the key-database slot ("NSS Certificate DB", slot
// 2) of an NSS softoken instance of its own: a copy of libsoftokn3.so in a
// directory of its own, with its own database made by certutil -N, so that
// one process holds two NSS databases with independent objects (a test of
// several tokens). Each call makes a new instance.
//
// A copy of the softoken shares libfreeblpriv3 and libnssutil3 with the
// process's other instance, and C_Finalize of either tears that shared
// state down (see the package doc): the instance is never finalised before
// Main's cleanup, like the shared NSS tokens, so Open of it never
// finalises it. The test binary's TestMain must call Main.
func NSSDBInstance(tb testing.TB) *Token {
	tb.Helper()
	skipIfAsked(tb)
	requireMain(tb)
	certutil := lookTool(tb, "certutil", "libnss3-tools")
	lib := findModule(tb, "libnss3", nssCandidates())
	shared.Lock()
	dir := sharedDir(tb, "p11derive-lab-nss-instance-")
	shared.Unlock()
	if strings.ContainsRune(dir, '\'') {
		tb.Fatalf("lab: NSS directory %q holds a quote, which NSS init args cannot carry", dir)
	}
	if out, err := exec.Command(certutil, "-N", "-d", "sql:"+dir, "--empty-password").CombinedOutput(); err != nil {
		tb.Fatalf("lab: certutil -N: %v\n%s", err, out)
	}
	module := filepath.Join(dir, "libsoftokn3.so")
	if err := CopyFile(lib, module); err != nil {
		tb.Fatalf("lab: copy the NSS softoken: %v", err)
	}
	return &Token{
		Kind:     KindNSS,
		Module:   module,
		InitArgs: fmt.Sprintf("configdir='sql:%s' certPrefix='' keyPrefix='' secmod='secmod.db' flags=", dir),
		Label:    nssDBLabel,
		SlotID:   nssDBSlot,
		Login:    true,
		Dir:      dir,
		shared:   true,
	}
}
