package revert

import (
	"slices"
	"testing"
)

func TestFailRunsNewestFirstOnce(t *testing.T) {
	var got []int
	r := New()
	for i := range 3 {
		r.Add(func() { got = append(got, i) })
	}
	r.Fail()
	r.Fail()
	if !slices.Equal(got, []int{2, 1, 0}) {
		t.Fatalf("undo order %v, want [2 1 0] once", got)
	}
}

func TestSuccessKeeps(t *testing.T) {
	ran := false
	r := New()
	r.Add(func() { ran = true })
	r.Success()
	r.Fail()
	if ran {
		t.Fatal("an undo step ran after Success")
	}
}
