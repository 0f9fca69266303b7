package tests

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/jepsen"
	"github.com/shoal-dev/shoal/tests/netns"
)

// TestLinearizable is the CI profile of the linearizability checker
// (tests/jepsen): three members on simulated hosts, two clients through
// each writing and reading config keys, creating, deleting and listing
// containers and snapshots, while a schedule drawn from each seed kills
// (-9) and restarts members and the leader, pauses them (SIGSTOP past the
// election timeout), cuts their links and partitions them. Each history
// must be linearizable, no call may run past its deadline and the members
// must agree afterwards. SHOAL_JEPSEN_SEEDS=1,2,3 replays seeds (default:
// three new ones, printed); SHOAL_JEPSEN_DURATION the length of each run
// (default 25s). bench/jepsen.sh runs many longer ones.
func TestLinearizable(t *testing.T) {
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		msg := "the linearizability checker needs: " + strings.Join(missing, ", ")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var seeds []int64
	if s := os.Getenv("SHOAL_JEPSEN_SEEDS"); s != "" {
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("SHOAL_JEPSEN_SEEDS: %v", err)
			}
			seeds = append(seeds, n)
		}
	} else {
		base := time.Now().UnixNano() % 1_000_000
		seeds = []int64{base, base + 1, base + 2}
	}
	d := 25 * time.Second
	if s := os.Getenv("SHOAL_JEPSEN_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			t.Fatalf("SHOAL_JEPSEN_DURATION: %v", err)
		}
	}
	c := jepsen.StartCluster(t, binDir)
	// The CI profile is the whole one: every fault kind, two keys per
	// container (concurrent writes to different keys of one container are
	// what caught UpdateContainer writing back a whole config it had read).
	faultSpec := os.Getenv("SHOAL_JEPSEN_FAULTS")
	faults, err := jepsen.ParseFaults(faultSpec)
	if err != nil {
		t.Fatalf("SHOAL_JEPSEN_FAULTS: %v", err)
	}
	keys := 2
	if s := os.Getenv("SHOAL_JEPSEN_KEYS"); s != "" {
		if keys, err = strconv.Atoi(s); err != nil {
			t.Fatalf("SHOAL_JEPSEN_KEYS: %v", err)
		}
	}
	// A violation's visualisation is written to SHOAL_JEPSEN_OUT (default
	// the temporary directory) and outlives the test, to be looked at.
	out := os.Getenv("SHOAL_JEPSEN_OUT")
	// One run after the other in this goroutine: the harness fails the
	// test it was started by, not a subtest.
	for _, seed := range seeds {
		res := c.Run(context.Background(), jepsen.Config{Seed: seed, Duration: d, Faults: faults, Keys: keys, OutDir: out,
			CheckTimeout: 20 * time.Second})
		t.Log(res.Report())
		if res.Violation() {
			t.Errorf("seed %d found a violation (report above); replay: SHOAL_JEPSEN_SEEDS=%d", seed, seed)
		}
	}
}
