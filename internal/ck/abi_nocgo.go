//go:build !cgo

package ck

// Package ck calls the PKCS#11 module through C function pointers, which
// needs cgo.
var _ = ck_requires_cgo_set_CGO_ENABLED_1
