package main

import "testing"

// TestProcsFor: a batch with more workers than Ps gets a P per worker and
// the cores; fewer workers, or GOMAXPROCS set by the user, leave it.
func TestProcsFor(t *testing.T) {
	for _, c := range []struct {
		workers, procs, cpus int
		env                  string
		want                 int
	}{
		{1, 2, 2, "", 0},
		{2, 2, 2, "", 0},
		{3, 2, 2, "", 5},
		{32, 2, 2, "", 34},
		{32, 64, 2, "", 0},
		{32, 2, 2, "2", 0},
	} {
		if got := procsFor(c.workers, c.procs, c.cpus, c.env); got != c.want {
			t.Errorf("procsFor(%d workers, %d procs, %d cpus, GOMAXPROCS=%q) = %d, want %d", c.workers, c.procs, c.cpus, c.env, got, c.want)
		}
	}
}
