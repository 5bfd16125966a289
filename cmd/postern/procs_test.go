package main

import "testing"

func TestProcsFor(t *testing.T) {
	for _, c := range []struct {
		procs int
		env   string
		cpus  int
		want  int
		from  string
	}{
		{0, "", 1, 1, "half the CPUs"},
		{0, "", 2, 1, "half the CPUs"},
		{0, "", 3, 1, "half the CPUs"},
		{0, "", 8, 4, "half the CPUs"},
		{0, "", 64, 32, "half the CPUs"},
		{3, "", 8, 3, "procs"},
		{16, "", 8, 16, "procs"},
		{3, "6", 6, 6, "GOMAXPROCS"},
		{0, "2", 2, 2, "GOMAXPROCS"},
	} {
		n, from := procsFor(c.procs, c.env, c.cpus)
		if n != c.want || from != c.from {
			t.Errorf("procsFor(%d, %q, %d) = %d, %q; want %d, %q", c.procs, c.env, c.cpus, n, from, c.want, c.from)
		}
	}
}
