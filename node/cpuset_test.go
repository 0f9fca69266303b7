package node

import (
	"maps"
	"slices"
	"testing"
)

func count(name string, n int) cpuDemand { return cpuDemand{Name: name, Count: n} }

func pinned(name string, cpus ...int) cpuDemand { return cpuDemand{Name: name, Pinned: cpus} }

func TestBalanceCPUs(t *testing.T) {
	two, four := []int{0, 1}, []int{0, 1, 2, 3}
	for _, tc := range []struct {
		what    string
		online  []int
		demands []cpuDemand
		want    map[string]string
	}{
		{"two containers with limits.cpu=1 on different CPUs", two,
			[]cpuDemand{count("b", 1), count("a", 1)},
			map[string]string{"a": "0", "b": "1"}},
		{"a pinned set stays and counts", two,
			[]cpuDemand{pinned("p", 0), count("a", 1)},
			map[string]string{"p": "0", "a": "1"}},
		{"pinned load, then ties to the lower CPU", two,
			[]cpuDemand{pinned("p", 0), count("a", 1), count("b", 1)},
			map[string]string{"p": "0", "a": "1", "b": "0"}},
		{"after a stops, b moves off the pinned CPU", two,
			[]cpuDemand{pinned("p", 0), count("b", 1)},
			map[string]string{"p": "0", "b": "1"}},
		{"rebalanced after one of three stops", two,
			[]cpuDemand{count("a", 1), count("c", 1)},
			map[string]string{"a": "0", "c": "1"}},
		{"more containers than CPUs wrap evenly", two,
			[]cpuDemand{count("e", 1), count("d", 1), count("c", 1), count("b", 1), count("a", 1)},
			map[string]string{"a": "0", "b": "1", "c": "0", "d": "1", "e": "0"}},
		{"counts of two spread over four", four,
			[]cpuDemand{count("a", 2), count("b", 2), count("c", 1)},
			map[string]string{"a": "0-1", "b": "2-3", "c": "0"}},
		{"a count picks the least loaded, listed in order", four,
			[]cpuDemand{pinned("p", 0, 2), count("a", 3)},
			map[string]string{"p": "0,2", "a": "0-1,3"}},
		{"a count of every CPU", two,
			[]cpuDemand{count("a", 2), count("b", 1)},
			map[string]string{"a": "0-1", "b": "0"}},
		{"a count above the host's gets them all", two,
			[]cpuDemand{count("a", 5)},
			map[string]string{"a": "0-1"}},
		{"one CPU: everyone shares it", []int{0},
			[]cpuDemand{pinned("p", 0), count("a", 1), count("b", 1)},
			map[string]string{"p": "0", "a": "0", "b": "0"}},
		{"offline CPUs are never picked", []int{0, 2, 3},
			[]cpuDemand{count("a", 1), count("b", 2)},
			map[string]string{"a": "0", "b": "2-3"}},
		{"nothing running", two, nil, map[string]string{}},
	} {
		got := balanceCPUs(tc.online, tc.demands)
		if !maps.Equal(got, tc.want) {
			t.Errorf("%s: balanceCPUs = %v, want %v", tc.what, got, tc.want)
		}
		// The input order never matters.
		rev := slices.Clone(tc.demands)
		slices.Reverse(rev)
		if again := balanceCPUs(tc.online, rev); !maps.Equal(again, got) {
			t.Errorf("%s: reversed input gives %v, not %v", tc.what, again, got)
		}
	}
}

func TestCPUList(t *testing.T) {
	for in, want := range map[string]string{
		"0": "0", "0-1": "0-1", "1,0": "0-1", "0-2,5,7-8\n": "0-2,5,7-8", "3,1-2,2": "1-3", "": "",
	} {
		cpus, err := parseCPUs(in)
		if err != nil || formatCPUs(cpus) != want {
			t.Errorf("parseCPUs(%q) = %v, %v; formatted %q, want %q", in, cpus, err, formatCPUs(cpus), want)
		}
	}
	for _, in := range []string{"x", "2-1", "-1", "1-"} {
		if _, err := parseCPUs(in); err == nil {
			t.Errorf("parseCPUs(%q) succeeded", in)
		}
	}
}

func TestCPUDemandOf(t *testing.T) {
	for v, want := range map[string]*cpuDemand{
		"2":     {Name: "c", Count: 2},
		"0-1,3": {Name: "c", Pinned: []int{0, 1, 3}},
		"":      nil,
		"0":     nil, // refused by validation; no demand
	} {
		d, ok := cpuDemandOf("c", map[string]string{"limits.cpu": v})
		if ok != (want != nil) || ok && (d.Name != want.Name || d.Count != want.Count || !slices.Equal(d.Pinned, want.Pinned)) {
			t.Errorf("cpuDemandOf(%q) = %+v, %v; want %+v", v, d, ok, want)
		}
	}
}
