package jepsen

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is how a call ended, as far as the client can tell.
type Outcome int

// Outcomes of a call.
const (
	// OK: the call succeeded; its result is recorded.
	OK Outcome = iota
	// Failed: the daemon refused it definitely (nothing changed); dropped.
	Failed
	// Unknown: it timed out or failed in a way that leaves its effect open;
	// a write is recorded as pending, a read dropped.
	Unknown
)

// Call is one client call as measured, whatever its outcome (latency
// figures and the calls that hit their deadline come from these).
type Call struct {
	Client  int
	Member  string
	Op      string
	Start   time.Duration // since the run's start
	Took    time.Duration
	Outcome Outcome
	Err     string
	// Overdue: the call did not answer within its deadline.
	Overdue bool
}

// Meta is what the visualisation and the excerpts show of an operation
// beside its input and output.
type Meta struct {
	Member string
	Err    string
}

func (m Meta) String() string {
	if m.Err != "" {
		return "via " + m.Member + ": " + m.Err
	}
	return "via " + m.Member
}

// Event is something the harness did (a fault and its end), for excerpts
// and the visualisation.
type Event struct {
	At, End time.Duration // End == At for instants
	What    string
}

// Recorder collects a run's history; it is safe for concurrent use.
type Recorder struct {
	start time.Time

	mu     sync.Mutex
	ops    []porcupine.Operation
	calls  []Call
	events []Event
}

// NewRecorder starts a history whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Now is the run's clock: time since the recorder started.
func (r *Recorder) Now() time.Duration { return time.Since(r.start) }

// Record adds a finished call: a successful one with its output, an
// unknown write as pending (infinite return time), nothing to the history
// for a definite failure or an unknown read. Every call counts for the
// latency figures.
func (r *Recorder) Record(client int, member string, in Input, call, ret time.Duration, out Output, outcome Outcome, err error, deadline time.Duration) {
	c := Call{Client: client, Member: member, Op: describe(in, out), Start: call, Took: ret - call, Outcome: outcome,
		Overdue: outcome == Unknown && ret-call >= deadline}
	if err != nil {
		c.Err = err.Error()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	switch {
	case outcome == OK:
		r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: int64(call), Output: out, Return: int64(ret),
			Metadata: Meta{Member: member}})
	case outcome == Unknown && in.Kind != Read && in.Kind != List:
		r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: int64(call), Output: Output{Pending: true},
			Return: math.MaxInt64, Metadata: Meta{Member: member, Err: c.Err}})
	}
}

// Event records something the harness did between at and end.
func (r *Recorder) Event(at, end time.Duration, what string) {
	r.mu.Lock()
	r.events = append(r.events, Event{At: at, End: end, What: what})
	r.mu.Unlock()
}

// History returns the operations recorded so far.
func (r *Recorder) History() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// Calls returns every call measured so far.
func (r *Recorder) Calls() []Call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Events returns the harness's events so far.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Verdict is the checker's answer on a history.
type Verdict struct {
	Result  porcupine.CheckResult
	Ops     int
	Pending int
	// Illegal names the objects whose history is not linearizable.
	Illegal []string
	// PerElement: the whole history ran out of time but every set's
	// elements, each checked alone, passed (Result stays Unknown) or one
	// failed (Result is Illegal and the objects are "SET∋ELEMENT").
	PerElement bool
	// Excerpt shows, for each illegal object, its operations around the
	// point where every linearization gets stuck.
	Excerpt string
	info    porcupine.LinearizationInfo
}

// Check checks a history against Model within timeout (porcupine answers
// Unknown when it runs out of time). The events are shown in excerpts.
func Check(history []porcupine.Operation, events []Event, timeout time.Duration) Verdict {
	v := Verdict{Ops: len(history)}
	for _, op := range history {
		if op.Output.(Output).Pending {
			v.Pending++
		}
	}
	v.Result, v.info = porcupine.CheckOperationsVerbose(Model, history, timeout)
	if v.Result == porcupine.Unknown {
		// A whole set with hundreds of operations can exhaust the
		// search; each element's membership alone is cheap, and a
		// violation there is one of the whole history too.
		proj := projectSets(history)
		if res, info := porcupine.CheckOperationsVerbose(Model, proj, timeout); res != porcupine.Unknown {
			v.PerElement = true
			if res == porcupine.Illegal {
				v.Result, v.info, history = res, info, proj
			}
		}
	}
	if v.Result != porcupine.Illegal {
		return v
	}
	single := Model
	single.Partition = nil
	var b strings.Builder
	for _, part := range partitionByKey(history) {
		res, info := porcupine.CheckOperationsVerbose(single, part, timeout)
		if res != porcupine.Illegal {
			continue
		}
		key := part[0].Input.(Input).Key
		v.Illegal = append(v.Illegal, key)
		excerpt(&b, key, part, related(history, key), info, events)
	}
	v.Excerpt = b.String()
	return v
}

// projectSets rewrites every set operation as operations on one-element
// sets, one per element the set ever had: Add and Remove on their own
// element's, a List on each element's (holding it or not). Registers stay.
func projectSets(history []porcupine.Operation) []porcupine.Operation {
	elems := map[string]map[string]bool{}
	note := func(set, e string) {
		if elems[set] == nil {
			elems[set] = map[string]bool{}
		}
		elems[set][e] = true
	}
	for _, op := range history {
		in := op.Input.(Input)
		switch in.Kind {
		case Add, Remove:
			note(in.Key, in.Value)
		case List:
			for _, e := range op.Output.(Output).Elems {
				note(in.Key, e)
			}
		}
	}
	var out []porcupine.Operation
	for _, op := range history {
		in := op.Input.(Input)
		switch in.Kind {
		case Add, Remove:
			op.Input = Input{Kind: in.Kind, Key: in.Key + "∋" + in.Value, Value: in.Value}
			out = append(out, op)
		case List:
			seen := op.Output.(Output).Elems
			for e := range elems[in.Key] {
				p := op
				p.Input = Input{Kind: List, Key: in.Key + "∋" + e}
				o := Output{Elems: []string{}}
				if slices.Contains(seen, e) {
					o.Elems = []string{e}
				}
				p.Output = o
				out = append(out, p)
			}
		default:
			out = append(out, op)
		}
	}
	return out
}

// Visualize writes porcupine's HTML view of the checked history to path,
// with the harness's events as annotations.
func (v Verdict) Visualize(path string, events []Event) error {
	var anns []porcupine.Annotation
	for _, e := range events {
		anns = append(anns, porcupine.Annotation{Tag: "faults", Start: int64(e.At), End: int64(e.End), Description: e.What,
			BackgroundColor: "#fdd"})
	}
	v.info.AddAnnotations(anns)
	if err := porcupine.VisualizePath(Model, v.info, path); err != nil {
		return fmt.Errorf("write visualisation %s: %w", path, err)
	}
	return nil
}

// related are the operations on the other registers of the same container
// as key (their writes replace the container's config too).
func related(history []porcupine.Operation, key string) []porcupine.Operation {
	ct, _, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	var out []porcupine.Operation
	for _, op := range history {
		k := op.Input.(Input).Key
		if k != key && strings.HasPrefix(k, ct+"/") {
			out = append(out, op)
		}
	}
	return out
}

// excerpt writes one object's operations in call order around the first
// one the longest partial linearization could not take, with the writes
// to the container's other keys ("·") and the events of that stretch of
// time.
func excerpt(b *strings.Builder, key string, part, others []porcupine.Operation, info porcupine.LinearizationInfo, events []Event) {
	var longest []int
	for _, lin := range info.PartialLinearizations() {
		for _, l := range lin {
			if len(l) > len(longest) {
				longest = l
			}
		}
	}
	in := map[int]bool{}
	for _, i := range longest {
		in[i] = true
	}
	order := make([]int, len(part))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, c int) bool { return part[order[a]].Call < part[order[c]].Call })
	stuck := len(order)
	for pos, i := range order {
		if !in[i] {
			stuck = pos
			break
		}
	}
	lo, hi := max(0, stuck-10), min(len(order), stuck+10)
	fmt.Fprintf(b, "object %s: %d operations, the longest linearization takes %d; around the first it cannot take:\n", key, len(part), len(longest))
	var from, to int64 = math.MaxInt64, 0
	for pos := lo; pos < hi; pos++ {
		op := part[order[pos]]
		mark := "  "
		switch {
		case pos == stuck:
			mark = "→ "
		case in[order[pos]]:
			mark = "✓ "
		}
		ret := retString(op)
		if op.Return != math.MaxInt64 {
			to = max(to, op.Return)
		}
		from, to = min(from, op.Call), max(to, op.Call)
		fmt.Fprintf(b, "  %s[%s, %s] client %d %s (%s)\n", mark, fmtDur(time.Duration(op.Call)), ret, op.ClientId,
			describe(op.Input, op.Output), op.Metadata)
	}
	for _, op := range others {
		in := op.Input.(Input)
		if in.Kind == Write && op.Call <= to && op.Return >= from {
			fmt.Fprintf(b, "  · [%s, %s] client %d %s (%s)\n", fmtDur(time.Duration(op.Call)), retString(op), op.ClientId,
				describe(op.Input, op.Output), op.Metadata)
		}
	}
	for _, e := range events {
		if int64(e.End) >= from && int64(e.At) <= to {
			fmt.Fprintf(b, "  event [%s, %s] %s\n", fmtDur(e.At), fmtDur(e.End), e.What)
		}
	}
}

func retString(op porcupine.Operation) string {
	if op.Return == math.MaxInt64 {
		return "pending"
	}
	return fmtDur(time.Duration(op.Return))
}

func fmtDur(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }
