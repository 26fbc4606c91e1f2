package cabi

import (
	"testing"
	"unsafe"
)

// TestTablesComplete checks the hand-written offsetof table against cgo's own
// translation of the same structures: the same types, sizes, alignments, and
// exactly the same members at the same offsets. A member missing from the
// offsetof table (and therefore possibly missing from the marshaller too)
// fails here.
func TestTablesComplete(t *testing.T) { compareTables(t, Structs(), CgoStructs()) }

// compareTables checks an offsetof table c against cgo's translation g:
// the same types, sizes and alignments, and exactly the same members in
// the same order at the same offsets.
func compareTables(t *testing.T, c, g map[string]Struct) {
	t.Helper()
	if len(c) != len(g) {
		t.Fatalf("offsetof table has %d types, cgo table %d", len(c), len(g))
	}
	for name, cs := range c {
		gs, ok := g[name]
		if !ok {
			t.Errorf("%s: missing from cgo table", name)
			continue
		}
		if cs.Size != gs.Size || cs.Align != gs.Align {
			t.Errorf("%s: offsetof table size/align %d/%d, cgo %d/%d", name, cs.Size, cs.Align, gs.Size, gs.Align)
		}
		if len(cs.Fields) != len(gs.Fields) {
			t.Errorf("%s: offsetof table lists %d members, cgo %d: %v vs %v", name, len(cs.Fields), len(gs.Fields), cs.Fields, gs.Fields)
			continue
		}
		for i := range cs.Fields {
			if cs.Fields[i] != gs.Fields[i] {
				t.Errorf("%s member %d: offsetof table %+v, cgo %+v", name, i, cs.Fields[i], gs.Fields[i])
			}
		}
	}
}

func TestConstants(t *testing.T) {
	for name, v := range Constants() {
		if v == 0 {
			t.Errorf("%s is 0", name)
		}
	}
}

func TestStoreLoadULong(t *testing.T) {
	var x [2]uint64 // CK_ULONG is at most 8 bytes
	p := unsafe.Pointer(&x[0])
	StoreULong(p, 0x1234)
	if got := LoadULong(p); got != 0x1234 {
		t.Fatalf("LoadULong = %#x", got)
	}
}

func TestDecodeRejectsWrongSize(t *testing.T) {
	if _, err := DecodeHKDFParams(make([]byte, 3)); err == nil {
		t.Fatal("DecodeHKDFParams accepted a 3-byte parameter")
	}
}
