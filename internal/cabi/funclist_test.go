package cabi

import "testing"

// TestCallTablesComplete checks the offsetof table of CallStructs against
// cgo's translation: the same types, sizes and alignments, and exactly the
// same members in the same order at the same offsets.
func TestCallTablesComplete(t *testing.T) { compareTables(t, CallStructs(), CgoCallStructs()) }

// CK_FUNCTION_LIST is a CK_VERSION followed by the 68 function pointers of
// PKCS#11 v2.40, C_Initialize first and C_WaitForSlotEvent last.
func TestFunctionList(t *testing.T) {
	fl := CallStructs()["CK_FUNCTION_LIST"]
	if n := len(fl.Fields); n != 1+68 {
		t.Fatalf("CK_FUNCTION_LIST has %d members, want version + 68 functions", n)
	}
	for i, want := range map[int]string{0: "version", 1: "C_Initialize", 25: "C_GetAttributeValue", 63: "C_DeriveKey", 68: "C_WaitForSlotEvent"} {
		if got := fl.Fields[i].Name; got != want {
			t.Errorf("member %d is %s, want %s", i, got, want)
		}
	}
}

func TestCallConstants(t *testing.T) {
	for name, v := range CallConstants() {
		if v == 0 {
			t.Errorf("%s is 0", name)
		}
	}
}
