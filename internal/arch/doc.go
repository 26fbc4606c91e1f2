// Package arch holds no code: its doc is the map of p11derive's packages,
// and its test keeps every arrow of the map pointing the way it shows.
//
// Layers, each using only those below it (a package may use packages of its
// own layer only where listed):
//
//	commands   cmd/p11derive ─→ internal/batch (the batch engine belongs to the command)
//	           examples/*
//	users      probe, derive/c11, derive/{emv,gp,an10922,dukpt,tr31}
//	           (the schemes share derive/scheme and derive/internal/chain;
//	           derive/scheme/verify runs them all against their known answers)
//	engine     derive: strategies, functions, the Token and its session pool
//	call path  internal/ck: the module's one function list, every PKCS#11 call
//	           mechanisms: PKCS#11 parameter structures and their marshaller
//	           internal/ckm: mechanism names
//	           internal/ref: software references (the probe's known answers)
//
// Test rigs, used by tests only (never by a package's non-test files, but
// for rigs using rigs): internal/lab (throwaway real tokens, p11-kit proxy
// and RPC), internal/fwd (a forwarding module that makes a real token
// misbehave), internal/cabi (the C view of the PKCS#11 headers),
// internal/kwref (RFC 3394/5649 key wrap in software),
// derive/internal/schemetest (the schemes' test harness), internal/baseline
// (the benchmarks' C loop, through internal/ck's function list).
//
// Only internal/ck, mechanisms (its C memory) and the rigs that play or
// inspect a module (internal/lab, internal/fwd, internal/cabi,
// internal/baseline) use cgo.
package arch
