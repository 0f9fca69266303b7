package jepsen

import (
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Kind is what an operation does to its object.
type Kind int

// The operations the models know. Registers take Write and Read; sets take
// Add, Remove and List.
const (
	Write Kind = iota + 1
	Read
	Add
	Remove
	List
)

func (k Kind) String() string {
	switch k {
	case Write:
		return "write"
	case Read:
		return "read"
	case Add:
		return "add"
	case Remove:
		return "remove"
	case List:
		return "list"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Input is an operation as invoked: its kind, the object (a register's key,
// a set's name) and the value written, added or removed.
type Input struct {
	Kind  Kind
	Key   string
	Value string
}

// Output is what an operation returned. Pending marks an operation whose
// outcome is unknown (it timed out or failed indefinitely): it may have
// taken effect or not.
type Output struct {
	Pending bool
	// Value is what a Read saw ("" for a key that is not set).
	Value string
	// Elems is what a List saw (any order).
	Elems []string
}

// setState is a set's state: its elements sorted, each after a NUL ("" when
// empty, as a register never written), a string so that porcupine compares
// and hashes it cheaply.
func setState(elems []string) string {
	s := slices.Clone(elems)
	sort.Strings(s)
	s = slices.Compact(s)
	if len(s) == 0 {
		return ""
	}
	return "\x00" + strings.Join(s, "\x00")
}

func setElems(state string) []string {
	if state == "" {
		return nil
	}
	return strings.Split(state[1:], "\x00")
}

// Model is the sequential specification every object of a run follows,
// partitioned by object: a register (Write sets it, Read returns its value,
// "" until the first write) or a set (Add of an absent element, Remove of a
// present one, List returns the elements). Add and Remove that succeeded
// had to find the element absent, resp. present (a create of a name taken
// fails, as does a delete of a missing one); a pending one may also have
// failed, so it never has to. A key names a register or a set, never both.
var Model = porcupine.Model{
	Partition: partitionByKey,
	Init:      func() any { return "" },
	Step:      step,
	Equal:     func(a, b any) bool { return a.(string) == b.(string) },
	Hash: func(s any) uint64 {
		h := fnv.New64a()
		h.Write([]byte(s.(string)))
		return h.Sum64()
	},
	DescribeOperation: describe,
	DescribeState: func(s any) string {
		st := s.(string)
		if strings.HasPrefix(st, "\x00") {
			return "{" + strings.Join(setElems(st), " ") + "}"
		}
		return fmt.Sprintf("%q", st)
	},
	DescribeOperationMetadata: func(m any) string {
		if m == nil {
			return ""
		}
		return fmt.Sprint(m)
	},
}

func step(state, input, output any) (bool, any) {
	st, in, out := state.(string), input.(Input), output.(Output)
	switch in.Kind {
	case Write:
		return true, in.Value
	case Read:
		return out.Value == st, st
	case Add, Remove:
		elems := setElems(st)
		has := slices.Contains(elems, in.Value)
		if !out.Pending && has == (in.Kind == Add) {
			return false, st
		}
		if in.Kind == Add && !has {
			return true, setState(append(elems, in.Value))
		}
		if in.Kind == Remove && has {
			return true, setState(slices.DeleteFunc(elems, func(e string) bool { return e == in.Value }))
		}
		return true, st
	case List:
		return setState(out.Elems) == st, st
	}
	return false, st
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	by := map[string][]porcupine.Operation{}
	var keys []string
	for _, op := range history {
		k := op.Input.(Input).Key
		if _, ok := by[k]; !ok {
			keys = append(keys, k)
		}
		by[k] = append(by[k], op)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, by[k])
	}
	return out
}

func describe(input, output any) string {
	in, out := input.(Input), output.(Output)
	var s string
	switch in.Kind {
	case Write, Add, Remove:
		s = fmt.Sprintf("%s(%s, %s)", in.Kind, in.Key, in.Value)
	case Read:
		s = fmt.Sprintf("read(%s) → %q", in.Key, out.Value)
	case List:
		s = fmt.Sprintf("list(%s) → {%s}", in.Key, strings.Join(sortedCopy(out.Elems), " "))
	default:
		s = fmt.Sprintf("%s(%s)", in.Kind, in.Key)
	}
	if out.Pending {
		s += " ?"
	}
	return s
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}
