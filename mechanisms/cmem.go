package mechanisms

// #include <stdlib.h>
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// nativeABI is the C data model of the build platform: CK_ULONG is C
// unsigned long.
var nativeABI = abi{
	ulongSize:  unsafe.Sizeof(C.ulong(0)),
	ulongAlign: unsafe.Alignof(C.ulong(0)),
	ptrSize:    unsafe.Sizeof(uintptr(0)),
	ptrAlign:   unsafe.Alignof(uintptr(0)),
}

// liveBlocks counts C blocks allocated and not yet freed (for the tests).
var liveBlocks atomic.Int64

// cAlloc returns n zeroed bytes of C memory (suitably aligned for any C
// type), or nil if the allocation fails.
func cAlloc(n uintptr) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	if p != nil {
		liveBlocks.Add(1)
	}
	return p
}

func cFree(p unsafe.Pointer) {
	C.free(p)
	liveBlocks.Add(-1)
}
