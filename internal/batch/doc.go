// Package batch derives a key for every row of a CSV file: the engine of
// the p11derive batch command, apart from the command line so that it can
// be tested and benchmarked on its own.
//
// The input ([Input]) is CSV with a header row naming its columns: id, data
// (hex) and optionally iv (hex, a row's own CBC IV), in any order. The
// output ([Output]) is CSV with a header row too, one row per key: id, then
// DK's label (keep mode) or DK wrapped under a transport key in hex (wrap
// mode), DK's check value, the strategy and the function (kdf).
//
// [Run] streams: rows go to Workers goroutines and come back to the output
// in input order, with at most 4 rows per worker and 64 more in flight
// (passed between the stages 16 at a time), so memory does not grow with
// the input. The only state that grows is the ids: those an output
// already held when a rerun opened it (16 bytes each, sorted) and those
// read in this run, to refuse a repeated one (a map of 16-byte digests,
// 25 to 50 bytes a row with the map's own).
//
// A run can stop at any moment and leave a valid output: rows are appended
// whole, the file is synced every second and at the end, a partial last row
// left by a killed run is cut off on the next open, and a rerun skips the
// ids the output holds. When the run is interrupted (its context
// cancelled) the rows in flight are undone, so the token keeps exactly the
// keys the output lists. [Deriver] goes further in keep mode: a key that a
// killed run made but could not record is found by its label on the rerun,
// compared by check value with the row's key, and adopted.
//
// [Deriver] is the job of the command: derive the row's key inside the
// token, then keep it as a token object or wrap it under a transport key
// (C_WrapKey) and destroy it. DK never exists in the clear on the host.
package batch
