// Command workload is the program live-move tests and benchmarks run inside
// a container (it is built static, so it runs in a busybox image). It holds
// touched memory with a known checksum, keeps a counter in memory that it
// appends with a timestamp to a log file (held open) every 100 ms, and
// watches a 10 ms ticker for the longest gap, which is the downtime seen
// from inside the container.
//
// Writing "report" into the control file makes it write a status line
// (counter, memory checksum now and at start, longest gap) to the status
// file; "reset" forgets the longest gap so far.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	memMiB := flag.Int("mem", 0, "MiB of memory to hold, touched")
	dir := flag.String("dir", "/root", "directory of the log, control and status files")
	flag.Parse()

	mem := make([]byte, *memMiB<<20)
	x := uint64(88172645463325252)
	for i := 0; i+8 <= len(mem); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := 0; j < 8; j++ {
			mem[i+j] = byte(x >> (8 * j))
		}
	}
	sum := func() string { s := sha256.Sum256(mem); return hex.EncodeToString(s[:]) }
	startSum := sum()

	log, err := os.OpenFile(*dir+"/ticks", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctl, status := *dir+"/control", *dir+"/status"
	var counter int64
	var maxGap time.Duration
	// Wall-clock time (Round(0) drops the monotonic reading): a restored
	// process's monotonic clock is shifted by CRIU's time namespace so that
	// it does not see the time it spent frozen, but the wall clock does.
	last := time.Now().Round(0)
	tick := time.NewTicker(10 * time.Millisecond)
	for n := 1; ; n++ {
		<-tick.C
		now := time.Now().Round(0)
		if gap := now.Sub(last); gap > maxGap {
			maxGap = gap
		}
		last = now
		if n%10 != 0 {
			continue
		}
		counter++
		fmt.Fprintf(log, "%d %d\n", counter, now.UnixMilli())
		b, err := os.ReadFile(ctl)
		if err != nil {
			continue
		}
		os.Remove(ctl)
		switch strings.TrimSpace(string(b)) {
		case "reset":
			maxGap = 0
		case "report":
			line := fmt.Sprintf("counter=%d sum=%s start=%s maxgap_ms=%d\n", counter, sum(), startSum, maxGap.Milliseconds())
			os.WriteFile(status+".tmp", []byte(line), 0o644)
			os.Rename(status+".tmp", status)
		}
		last = time.Now().Round(0)
	}
}
