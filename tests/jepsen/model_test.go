package jepsen

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op is a hand-written operation: client, input, [call, ret] (ret < 0:
// pending) and output.
func op(client int, kind Kind, key, value string, call, ret int64, out Output) porcupine.Operation {
	if ret < 0 {
		out.Pending = true
		ret = math.MaxInt64
	}
	return porcupine.Operation{ClientId: client, Input: Input{Kind: kind, Key: key, Value: value}, Call: call, Output: out,
		Return: ret, Metadata: Meta{Member: "n1"}}
}

func read(v string) Output    { return Output{Value: v} }
func list(e ...string) Output { return Output{Elems: e} }
func none() Output            { return Output{} }

func TestModel(t *testing.T) {
	cases := []struct {
		name    string
		history []porcupine.Operation
		ok      bool
	}{
		{"register: read of a key never written is empty", []porcupine.Operation{
			op(0, Read, "c/k", "", 0, 10, read("")),
		}, true},
		{"register: read after write sees it", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(1, Read, "c/k", "", 20, 30, read("a")),
		}, true},
		{"register: stale read after an acknowledged write", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(0, Write, "c/k", "b", 20, 30, none()),
			op(1, Read, "c/k", "", 40, 50, read("a")),
		}, false},
		{"register: concurrent read may see either", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(0, Write, "c/k", "b", 20, 50, none()),
			op(1, Read, "c/k", "", 30, 40, read("a")),
			op(2, Read, "c/k", "", 35, 45, read("b")),
		}, true},
		{"register: once b is seen, a later read cannot go back to a", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(0, Write, "c/k", "b", 20, 100, none()),
			op(1, Read, "c/k", "", 30, 40, read("b")),
			op(2, Read, "c/k", "", 50, 60, read("a")),
		}, false},
		{"register: a value nobody wrote", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(1, Read, "c/k", "", 20, 30, read("z")),
		}, false},
		{"register: a pending write may show up late", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(1, Write, "c/k", "b", 20, -1, none()),
			op(2, Read, "c/k", "", 30, 40, read("a")),
			op(2, Read, "c/k", "", 1000, 1010, read("b")),
		}, true},
		{"register: a pending write may never show up", []porcupine.Operation{
			op(0, Write, "c/k", "a", 0, 10, none()),
			op(1, Write, "c/k", "b", 20, -1, none()),
			op(2, Read, "c/k", "", 1000, 1010, read("a")),
		}, true},
		{"register: keys are independent", []porcupine.Operation{
			op(0, Write, "c/k0", "a", 0, 10, none()),
			op(1, Write, "c/k1", "b", 0, 10, none()),
			op(2, Read, "c/k0", "", 20, 30, read("a")),
			op(2, Read, "c/k1", "", 40, 50, read("b")),
		}, true},
		{"register: a lost update on one key of two", []porcupine.Operation{
			op(0, Write, "c/k0", "a", 0, 10, none()),
			op(1, Write, "c/k1", "b", 0, 10, none()),
			op(2, Read, "c/k0", "", 20, 30, read("")),
			op(2, Read, "c/k1", "", 40, 50, read("b")),
		}, false},
		{"set: add then list", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, 10, none()),
			op(1, Add, "ct", "y", 5, 15, none()),
			op(2, List, "ct", "", 20, 30, list("y", "x")),
		}, true},
		{"set: an acknowledged add missing from a later list", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, 10, none()),
			op(1, List, "ct", "", 20, 30, list()),
		}, false},
		{"set: a removed element still listed", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, 10, none()),
			op(0, Remove, "ct", "x", 20, 30, none()),
			op(1, List, "ct", "", 40, 50, list("x")),
		}, false},
		{"set: a successful add of an element already there", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, 10, none()),
			op(1, Add, "ct", "x", 20, 30, none()),
		}, false},
		{"set: a successful remove of an absent element", []porcupine.Operation{
			op(0, Remove, "ct", "x", 0, 10, none()),
		}, false},
		{"set: a pending remove of an absent element", []porcupine.Operation{
			op(0, Remove, "ct", "x", 0, -1, none()),
			op(1, List, "ct", "", 20, 30, list()),
		}, true},
		{"set: a pending add seen, then removed", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, -1, none()),
			op(1, List, "ct", "", 20, 30, list("x")),
			op(1, Remove, "ct", "x", 40, 50, none()),
			op(2, List, "ct", "", 60, 70, list()),
		}, true},
		{"set: an element that appears, vanishes and comes back with one add", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, -1, none()),
			op(1, List, "ct", "", 20, 30, list("x")),
			op(1, List, "ct", "", 40, 50, list()),
			op(1, List, "ct", "", 60, 70, list("x")),
		}, false},
		{"set: two lists disagree on order of two adds (not linearizable)", []porcupine.Operation{
			op(0, Add, "ct", "x", 0, 100, none()),
			op(1, Add, "ct", "y", 0, 100, none()),
			op(2, List, "ct", "", 10, 20, list("x")),
			op(3, List, "ct", "", 10, 20, list("y")),
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Check(c.history, nil, 10*time.Second)
			if got := v.Result == porcupine.Ok; got != c.ok {
				t.Fatalf("linearizable = %v (%s), want %v\n%s", got, v.Result, c.ok, v.Excerpt)
			}
			if !c.ok && (len(v.Illegal) == 0 || v.Excerpt == "") {
				t.Fatalf("an illegal history names no object or has no excerpt: %+v", v)
			}
		})
	}
}

// TestCheckReportsAndVisualizes checks that a violation names its object,
// shows the operations around it with the events of that time, and that
// the HTML visualisation is written.
func TestCheckReportsAndVisualizes(t *testing.T) {
	history := []porcupine.Operation{
		op(0, Write, "c/k", "a", 0, 10, none()),
		op(0, Write, "c/k", "b", 20, 30, none()),
		op(1, Read, "c/k", "", 40, 50, read("a")),
		op(2, Add, "ct", "x", 0, 10, none()),
		op(2, List, "ct", "", 20, 30, list("x")),
	}
	events := []Event{{At: 15, End: 45, What: "kill -9 n1"}}
	v := Check(history, events, 10*time.Second)
	if v.Result != porcupine.Illegal || strings.Join(v.Illegal, ",") != "c/k" {
		t.Fatalf("verdict %s on %v, want Illegal on c/k", v.Result, v.Illegal)
	}
	for _, want := range []string{"object c/k", `→ `, `read(c/k) → "a"`, "kill -9 n1", "via n1"} {
		if !strings.Contains(v.Excerpt, want) {
			t.Errorf("excerpt lacks %q:\n%s", want, v.Excerpt)
		}
	}
	path := filepath.Join(t.TempDir(), "history.html")
	if err := v.Visualize(path, events); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<html") {
		t.Fatalf("%s is not HTML", path)
	}
	if v.Ops != 5 || v.Pending != 0 {
		t.Fatalf("ops %d pending %d, want 5 and 0", v.Ops, v.Pending)
	}
}

// TestRecorder checks what reaches the history: successes, pending writes
// (infinite return), never failed calls nor unknown reads; every call
// counts for latency and a call that ran into its deadline is overdue.
func TestRecorder(t *testing.T) {
	r := NewRecorder()
	dl := 10 * time.Second
	r.Record(0, "n1", Input{Kind: Write, Key: "k", Value: "a"}, 0, time.Millisecond, Output{}, OK, nil, dl)
	r.Record(0, "n1", Input{Kind: Write, Key: "k", Value: "b"}, 0, dl, Output{}, Unknown, os.ErrDeadlineExceeded, dl)
	r.Record(1, "n2", Input{Kind: Read, Key: "k"}, 0, dl, Output{}, Unknown, os.ErrDeadlineExceeded, dl)
	r.Record(1, "n2", Input{Kind: Write, Key: "k", Value: "c"}, 0, time.Millisecond, Output{}, Failed, os.ErrInvalid, dl)
	h := r.History()
	if len(h) != 2 || h[1].Return != math.MaxInt64 || !h[1].Output.(Output).Pending {
		t.Fatalf("history %+v: want the success and one pending write", h)
	}
	overdue := 0
	for _, c := range r.Calls() {
		if c.Overdue {
			overdue++
		}
	}
	if len(r.Calls()) != 4 || overdue != 2 {
		t.Fatalf("calls %d overdue %d, want 4 and 2", len(r.Calls()), overdue)
	}
}

// TestCheckPerElement checks the projection of sets onto their elements:
// it keeps a stale list illegal and a correct history legal.
func TestCheckPerElement(t *testing.T) {
	stale := []porcupine.Operation{
		op(0, Add, "ct", "x", 0, 10, none()),
		op(0, Add, "ct", "y", 0, 10, none()),
		op(1, Remove, "ct", "x", 20, 30, none()),
		op(2, List, "ct", "", 40, 50, list("x", "y")),
	}
	if res := porcupine.CheckOperations(Model, projectSets(stale)); res {
		t.Fatal("the projection of a stale list is linearizable")
	}
	fine := []porcupine.Operation{
		op(0, Add, "ct", "x", 0, 10, none()),
		op(1, Add, "ct", "y", 5, -1, none()),
		op(1, Remove, "ct", "x", 20, 30, none()),
		op(2, List, "ct", "", 40, 50, list("y")),
		op(3, Write, "c/k", "a", 0, 10, none()),
		op(3, Read, "c/k", "", 20, 30, read("a")),
	}
	if res := porcupine.CheckOperations(Model, projectSets(fine)); !res {
		t.Fatal("the projection of a linearizable history is not")
	}
}
