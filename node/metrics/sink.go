package metrics

import (
	gometrics "github.com/hashicorp/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// RaftSink takes hashicorp/raft's timings as it reports them through
// go-metrics (install it with InstallRaftSink before Raft starts) and keeps
// the ones a member's health shows in: how long the FSM takes to apply
// what a commit brings (every member) and how long an entry takes to commit (the leader).
// Every other key (memberlist's, raft's others) is dropped.
type RaftSink struct {
	apply, commit prometheus.Histogram
}

var _ gometrics.MetricSink = (*RaftSink)(nil)

// NewRaftSink returns a sink with empty histograms.
func NewRaftSink() *RaftSink {
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	return &RaftSink{
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_raft_apply_duration_seconds",
			Help: "Time the FSM took to apply what one commit brought (a batch of Raft entries) on this member.", Buckets: buckets}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shoal_raft_commit_duration_seconds",
			Help: "Time from dispatch to commit of a Raft entry, while this member leads.", Buckets: buckets}),
	}
}

// InstallRaftSink makes s go-metrics' global sink: no service prefix, no
// hostname, no runtime sampling goroutine.
func InstallRaftSink(s *RaftSink) error {
	cfg := gometrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableHostnameLabel = false
	cfg.EnableRuntimeMetrics = false
	cfg.EnableTypePrefix = false
	_, err := gometrics.NewGlobal(cfg, s)
	return err
}

// Describe and Collect make the sink a prometheus.Collector.
func (s *RaftSink) Describe(ch chan<- *prometheus.Desc) {
	s.apply.Describe(ch)
	s.commit.Describe(ch)
}

func (s *RaftSink) Collect(ch chan<- prometheus.Metric) {
	s.apply.Collect(ch)
	s.commit.Collect(ch)
}

// AddSample records raft's timings (milliseconds, go-metrics' default
// granularity).
func (s *RaftSink) AddSample(key []string, val float32) {
	if len(key) != 3 && len(key) != 2 || key[0] != "raft" {
		return
	}
	switch {
	case len(key) == 3 && key[1] == "fsm" && (key[2] == "apply" || key[2] == "applyBatch"):
		// The FSM is a BatchingFSM: raft times each batch it hands over
		// (fsm.applyBatch); fsm.apply is the unbatched path's.
		s.apply.Observe(float64(val) / 1000)
	case len(key) == 2 && key[1] == "commitTime":
		s.commit.Observe(float64(val) / 1000)
	}
}

func (s *RaftSink) AddSampleWithLabels(key []string, val float32, _ []gometrics.Label) {
	s.AddSample(key, val)
}

func (s *RaftSink) SetGauge([]string, float32)                              {}
func (s *RaftSink) SetGaugeWithLabels([]string, float32, []gometrics.Label) {}
func (s *RaftSink) EmitKey([]string, float32)                               {}
func (s *RaftSink) IncrCounter([]string, float32)                           {}
func (s *RaftSink) IncrCounterWithLabels([]string, float32, []gometrics.Label) {
}
