package fsutil

import "testing"

func TestStderrSummary(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"  \n", ""},
		{"At subvol subvol\nERROR: writing to subvol failed: No space left on device\n", "ERROR: writing to subvol failed: No space left on device"},
		{"line one\nline two\n", "line one; line two"},
		{"ERROR: a\nnote\nerror: b", "ERROR: a; error: b"},
	} {
		if got := stderrSummary([]byte(tc.in)); got != tc.want {
			t.Errorf("stderrSummary(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
