package membership

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkFailureDetection measures, per iteration, the time from killing
// one member of a fresh 3-member cluster (Shutdown without Leave) to the
// first and to the last survivor's Fail event. Run with -benchtime=3x; it
// reports figures, it asserts none.
func BenchmarkFailureDetection(b *testing.B) {
	var first, all []time.Duration
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		nodes := startCluster(b, 3, mustKey(b))
		victim := nodes[2]
		b.StartTimer()
		start := time.Now()
		victim.kill(b)
		waitFor(b, 30*time.Second, "Fail on every survivor", func() bool {
			return nodes[0].hasEvent(victim.Name(), EventFail) && nodes[1].hasEvent(victim.Name(), EventFail)
		})
		b.StopTimer()
		t0, _ := nodes[0].eventAt(victim.Name(), EventFail)
		t1, _ := nodes[1].eventAt(victim.Name(), EventFail)
		firstAt, allAt := minTime(t0, t1).Sub(start), maxTime(t0, t1).Sub(start)
		first, all = append(first, firstAt), append(all, allAt)
		b.Logf("iteration %d: first survivor %v, all survivors %v", i, firstAt, allAt)
		for _, n := range nodes {
			n.kill(b)
		}
		b.StartTimer()
	}
	b.ReportMetric(msMedian(first), "detect-first-ms/op")
	b.ReportMetric(msMedian(all), "detect-all-ms/op")
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func msMedian(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
