// Command bench is the bench profile of the linearizability checker
// (tests/jepsen, run by bench/jepsen.sh): many seeded runs on one cluster
// of three simulated hosts, then the totals — runs, operations checked,
// violations, call latency during faults (p50/p99/max) and the longest
// call. A violation prints its seed, the history around it and the path
// of porcupine's visualisation; the exit status is 1 when any run found one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
	"github.com/shoal-dev/shoal/tests/jepsen"
	"github.com/shoal-dev/shoal/tests/netns"
)

func main() {
	runs := flag.Int("runs", 10, "runs (one seed each)")
	duration := flag.Duration("duration", 60*time.Second, "length of each run's workload")
	seed := flag.Int64("seed", time.Now().UnixNano()%1_000_000, "seed of the first run (the next runs take the following ones)")
	faultList := flag.String("faults", "all", "fault kinds: all, none, or a comma-separated list of "+fmt.Sprint(jepsen.AllFaults))
	keys := flag.Int("keys", 2, "registers (config keys) per container")
	clients := flag.Int("clients", 2, "clients per member")
	out := flag.String("out", os.TempDir(), "directory for the visualisations of violations")
	flag.Parse()
	faults, err := jepsen.ParseFaults(*faultList)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if missing := append(harness.Missing(), netns.Missing()...); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	t := &harness.Program{}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	c := jepsen.StartCluster(t, bin)

	var ops, pending, calls, violations, illegal, overdue, unconverged, unknown, nfaults int
	var during []time.Duration
	var longest jepsen.Call
	var longestSeed int64
	var bad []int64
	for i := range *runs {
		s := *seed + int64(i)
		res := c.Run(context.Background(), jepsen.Config{Seed: s, Duration: *duration, Faults: faults, Keys: *keys,
			ClientsPerMember: *clients, OutDir: *out})
		fmt.Print(res.Report())
		ops += res.Verdict.Ops
		pending += res.Verdict.Pending
		calls += len(res.Calls)
		nfaults += len(res.Events)
		during = append(during, res.DuringFaults()...)
		if l := res.Longest(); l.Took > longest.Took {
			longest, longestSeed = l, s
		}
		if res.Violation() {
			violations++
			bad = append(bad, s)
		}
		if res.Verdict.Result == "Illegal" {
			illegal++
		}
		if res.Verdict.Result == "Unknown" {
			unknown++
		}
		overdue += len(res.Overdue())
		if res.NotConverged != "" {
			unconverged++
		}
	}
	fmt.Printf("\n# linearizability under faults: %d runs of %s, faults %s, %d registers per container, %d clients per member\n",
		*runs, *duration, *faultList, *keys, *clients)
	fmt.Printf("runs %d, faults %d, calls %d, operations checked %d (%d pending)\n", *runs, nfaults, calls, ops, pending)
	fmt.Printf("violations %d (runs): not linearizable %d, calls past their deadline %d, never converged %d; checker out of time %d\n",
		violations, illegal, overdue, unconverged, unknown)
	fmt.Printf("call latency during faults: p50 %s p99 %s max %s (%d calls)\n", jepsen.Percentile(during, 50).Round(time.Millisecond),
		jepsen.Percentile(during, 99).Round(time.Millisecond), jepsen.Percentile(during, 100).Round(time.Millisecond), len(during))
	fmt.Printf("longest call: %s (%s via %s, seed %d)\n", longest.Took.Round(time.Millisecond), longest.Op, longest.Member, longestSeed)
	if len(bad) > 0 {
		fmt.Printf("seeds with violations: %v\n", bad)
	}
	t.Close()
	if violations > 0 {
		os.Exit(1)
	}
}
