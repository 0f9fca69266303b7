package storage_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/storage"
)

func TestVolumeNames(t *testing.T) {
	valid := []string{"c1", "containers/c1", "images/" + strings.Repeat("ab", 32), "custom/a/b-c_d.e:f+g@h"}
	invalid := []string{"", "/a", "a/", "a//b", "..", "a/../b", "./a", ".hidden", "a b", "a%2Fb", "a\\b", "é", strings.Repeat("x", 201)}
	for _, v := range valid {
		if err := storage.ValidateVolumeName(v); err != nil {
			t.Errorf("ValidateVolumeName(%q) = %v", v, err)
		}
		enc := storage.EncodeVolumeName(v)
		if strings.Contains(enc, "/") {
			t.Errorf("EncodeVolumeName(%q) = %q has a slash", v, enc)
		}
		if got, ok := storage.DecodeVolumeName(enc); !ok || got != v {
			t.Errorf("DecodeVolumeName(%q) = %q, %v; want %q", enc, got, ok, v)
		}
	}
	for _, v := range invalid {
		if err := storage.ValidateVolumeName(v); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ValidateVolumeName(%q) = %v, want ErrInvalidName", v, err)
		}
	}
	for _, enc := range []string{"a%2F", "%2Fa", "a%2f", ".x", "a/b"} {
		if v, ok := storage.DecodeVolumeName(enc); ok {
			t.Errorf("DecodeVolumeName(%q) = %q, want not ok", enc, v)
		}
	}
	for _, s := range []string{"", "a/b", "..", ".s", "s s"} {
		if err := storage.ValidateSnapshotName(s); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ValidateSnapshotName(%q) = %v, want ErrInvalidName", s, err)
		}
	}
	if err := storage.ValidateSnapshotName("snap-2026.01.01"); err != nil {
		t.Error(err)
	}
}
