package config

import (
	"errors"
	"strings"
	"testing"
)

// A bad snapshot key is refused naming the key and the allowed forms.
func TestSnapshotKeys(t *testing.T) {
	for k, v := range map[string]string{
		"snapshots.schedule":         "*/5 * * * *, @daily",
		"snapshots.schedule.stopped": "true",
		"snapshots.expiry":           "2w 3d",
		"snapshots.pattern":          "auto-{{ creation_date|date:'2006-01-02' }}-%d",
	} {
		if err := ValidateKey(k, v); err != nil {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
	for k, want := range map[[2]string]string{
		{"snapshots.schedule", "61 * * * *"}:    "a cron expression MINUTE HOUR",
		{"snapshots.schedule", "@sometimes"}:    "@hourly, @daily",
		{"snapshots.schedule.stopped", "maybe"}: "true or false",
		{"snapshots.expiry", "1 day"}:           "units M (minutes)",
		{"snapshots.pattern", "{{ hostname }}"}: "creation_date",
	} {
		err := ValidateKey(k[0], k[1])
		if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), k[0]+": ") || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%q: %v, want one line naming the key with %q", k[0], k[1], err, want)
		}
	}
	for _, ok := range []string{"snap0", "2024-03-04_15-04-05", "a.b:c"} {
		if err := ValidateSnapshotName("name", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", ".x", "a/b", "a b", strings.Repeat("a", 64)} {
		if err := ValidateSnapshotName("name", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
