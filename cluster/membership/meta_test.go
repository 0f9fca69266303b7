package membership

import (
	"errors"
	"log/slog"
	"testing"
)

func TestMetaRoundTrip(t *testing.T) {
	in := testMeta("n1")
	b, err := EncodeMeta(in)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("encoded meta: %d bytes: %s", len(b), b)
	out, err := DecodeMeta("n1", b)
	if err != nil {
		t.Fatal(err)
	}
	in.Version = MetaVersion
	if !metaEqual(in, out) {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

func TestDecodeMeta(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", "", true},
		{"newer version with unknown field", `{"v":7,"g":"a:1","zz":true}`, true},
		{"no version", `{"g":"a:1"}`, false},
		{"garbage", `{not json`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMeta("n", []byte(tc.in))
			if tc.ok != (err == nil) {
				t.Fatalf("DecodeMeta(%q) = %v", tc.in, err)
			}
			if !tc.ok && !errors.Is(err, ErrBadMeta) {
				t.Fatalf("error %v is not ErrBadMeta", err)
			}
			if m.Name != "n" {
				t.Fatalf("name %q", m.Name)
			}
		})
	}
}

func TestParseGossipLine(t *testing.T) {
	for _, tc := range []struct {
		in    string
		level slog.Level
		msg   string
	}{
		{"[ERR] memberlist: boom", slog.LevelError, "boom"},
		{"[WARN] memberlist: hmm", slog.LevelWarn, "hmm"},
		{"[INFO] memberlist: hi", slog.LevelInfo, "hi"},
		{"[DEBUG] memberlist: Stream connection from=1.2.3.4", slog.LevelDebug, "Stream connection from=1.2.3.4"},
		{"[ERR] Failed to shutdown transport: x", slog.LevelError, "Failed to shutdown transport: x"},
		{"untagged", slog.LevelInfo, "untagged"},
	} {
		level, msg := parseGossipLine(tc.in)
		if level != tc.level || msg != tc.msg {
			t.Errorf("parseGossipLine(%q) = %v %q, want %v %q", tc.in, level, msg, tc.level, tc.msg)
		}
	}
}
