//go:build !cgo

package mechanisms

// The parameters are placed in C memory (C.calloc), which needs cgo.
var _ = mechanisms_requires_cgo_set_CGO_ENABLED_1
