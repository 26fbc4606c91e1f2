package derive

// For the external tests of this directory (package derive_test), which
// may import packages that import derive (the probe).
var FinalizeModule = finalizeModule
