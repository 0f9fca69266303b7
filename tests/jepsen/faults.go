package jepsen

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// FaultKind is one kind of fault the schedule draws.
type FaultKind int

// Faults a run can inject. Each lasts its Hold and is undone before the
// next starts.
const (
	// Kill: kill -9 of a member's shoald, restarted after Hold.
	Kill FaultKind = iota + 1
	// KillLeader: Kill of whoever leads when it starts.
	KillLeader
	// Pause: SIGSTOP of a member's shoald, SIGCONT after Hold (longer than
	// Raft's election timeout, 500 ms).
	Pause
	// PauseLeader: Pause of the leader.
	PauseLeader
	// Cut: every packet of a member's host dropped, healed after Hold.
	Cut
	// Partition: a member on one side, the two others on the other; the
	// leader is the one isolated half the time.
	Partition
)

// AllFaults are the kinds a run draws from by default.
var AllFaults = []FaultKind{Kill, KillLeader, Pause, PauseLeader, Cut, Partition}

func (k FaultKind) String() string {
	switch k {
	case Kill:
		return "kill"
	case KillLeader:
		return "kill-leader"
	case Pause:
		return "pause"
	case PauseLeader:
		return "pause-leader"
	case Cut:
		return "cut"
	case Partition:
		return "partition"
	}
	return fmt.Sprintf("fault(%d)", int(k))
}

// ParseFaults reads a comma-separated list of fault kinds ("all" for
// AllFaults, "none" for none).
func ParseFaults(s string) ([]FaultKind, error) {
	if s == "" || s == "all" {
		return AllFaults, nil
	}
	if s == "none" {
		return nil, nil
	}
	var out []FaultKind
	for _, name := range strings.Split(s, ",") {
		found := false
		for _, k := range AllFaults {
			if k.String() == strings.TrimSpace(name) {
				out, found = append(out, k), true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown fault %q (known: %v)", name, AllFaults)
		}
	}
	return out, nil
}

// Fault is one step of a schedule.
type Fault struct {
	// At is the earliest start, since the run's start (a restart that
	// takes longer pushes the rest back).
	At   time.Duration
	Kind FaultKind
	// Target is the member's index (for kinds that do not pick the leader;
	// for Partition with Leader set, the leader is isolated instead).
	Target int
	Leader bool
	Hold   time.Duration
}

func (f Fault) String() string {
	who := fmt.Sprintf("member %d", f.Target)
	if f.Leader || f.Kind == KillLeader || f.Kind == PauseLeader {
		who = "the leader"
	}
	return fmt.Sprintf("%s of %s for %s at %s", f.Kind, who, f.Hold, f.At)
}

// Schedule draws the faults of a run of length d over n members from seed:
// the first after 2-4 s, each held 1.5-5 s (pauses 1.5-4 s), 1-3 s of
// quiet between them, none starting in the last 3 s.
func Schedule(seed int64, d time.Duration, n int, kinds []FaultKind) []Fault {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6a65707365e))
	span := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	var out []Fault
	at := span(2*time.Second, 4*time.Second)
	for at < d-3*time.Second && len(kinds) > 0 {
		f := Fault{At: at, Kind: kinds[rng.IntN(len(kinds))], Target: rng.IntN(n), Hold: span(1500*time.Millisecond, 5*time.Second)}
		switch f.Kind {
		case Pause, PauseLeader:
			f.Hold = span(1500*time.Millisecond, 4*time.Second)
		case Partition:
			f.Leader = rng.IntN(2) == 0
		}
		out = append(out, f)
		at += f.Hold + span(time.Second, 3*time.Second)
	}
	return out
}
