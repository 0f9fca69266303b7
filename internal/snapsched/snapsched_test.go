package snapsched

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseScheduleMatches(t *testing.T) {
	for _, tc := range []struct {
		spec      string
		yes, no   []string
		wantFires int // in the day 2024-03-04 (a Monday), minute by minute
	}{
		{"* * * * *", []string{"2024-03-04 10:17"}, nil, 1440},
		{"@hourly", []string{"2024-03-04 10:00"}, []string{"2024-03-04 10:01"}, 24},
		{"@daily", []string{"2024-03-04 00:00"}, []string{"2024-03-04 01:00"}, 1},
		{"@midnight", []string{"2024-03-04 00:00"}, nil, 1},
		{"@weekly", []string{"2024-03-03 00:00"}, []string{"2024-03-04 00:00"}, 0},
		{"@monthly", []string{"2024-04-01 00:00"}, []string{"2024-03-04 00:00"}, 0},
		{"@yearly", []string{"2025-01-01 00:00"}, []string{"2024-03-01 00:00"}, 0},
		{"*/15 9-17 * * mon-fri", []string{"2024-03-04 09:45", "2024-03-04 17:00"}, []string{"2024-03-04 18:00", "2024-03-09 10:00", "2024-03-04 09:50"}, 36},
		{"0 1,13 * * *", []string{"2024-03-04 13:00"}, []string{"2024-03-04 14:00"}, 2},
		{"@daily, @hourly", []string{"2024-03-04 05:00"}, nil, 24},
		{"@daily,@hourly", []string{"2024-03-04 05:00"}, nil, 24},
		{"0 6 * * *, 30 18 * * *", []string{"2024-03-04 06:00", "2024-03-04 18:30"}, []string{"2024-03-04 18:00"}, 2},
		{"0 0 * * 7", []string{"2024-03-03 00:00"}, nil, 0},
		// Day of month and day of week both given: either, as cron.
		{"0 0 13 * 5", []string{"2024-03-13 00:00", "2024-03-08 00:00"}, []string{"2024-03-12 00:00"}, 0},
		{"5 * * jan,mar *", []string{"2024-03-04 10:05"}, []string{"2024-02-04 10:05"}, 24},
	} {
		s, err := ParseSchedule(tc.spec)
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		for _, y := range tc.yes {
			if !s.Matches(at(y)) {
				t.Errorf("%q does not fire at %s", tc.spec, y)
			}
		}
		for _, n := range tc.no {
			if s.Matches(at(n)) {
				t.Errorf("%q fires at %s", tc.spec, n)
			}
		}
		fires := 0
		for m := at("2024-03-04 00:00"); m.Before(at("2024-03-05 00:00")); m = m.Add(time.Minute) {
			if s.Matches(m) {
				fires++
			}
		}
		if fires != tc.wantFires {
			t.Errorf("%q fires %d times on 2024-03-04, want %d", tc.spec, fires, tc.wantFires)
		}
	}
	if s, err := ParseSchedule(""); s != nil || err != nil {
		t.Fatalf("empty schedule: %v %v", s, err)
	}
	s, _ := ParseSchedule("30 2 * * *")
	if got := s.Next(at("2024-03-04 02:30")); !got.Equal(at("2024-03-05 02:30")) {
		t.Fatalf("Next after a firing minute = %s", got)
	}
	if s, _ := ParseSchedule("0 0 31 2 *"); !s.Next(at("2024-03-04 02:30")).IsZero() {
		t.Fatal("Feb 31 fires")
	}
}

func TestParseScheduleRefuses(t *testing.T) {
	for _, bad := range []string{"*", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *",
		"* * * * 8", "*/0 * * * *", "5-1 * * * *", "@often", "@daily,", "a b c d e", "1,,2 * * * *", "@startup"} {
		if _, err := ParseSchedule(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseExpiry(t *testing.T) {
	base := at("2024-01-31 10:00")
	for spec, want := range map[string]string{
		"1M":                "2024-01-31 10:01",
		"2H":                "2024-01-31 12:00",
		"3d":                "2024-02-03 10:00",
		"1w":                "2024-02-07 10:00",
		"1m":                "2024-03-02 10:00", // Jan 31 + 1 month, normalised as Go does
		"1y":                "2025-01-31 10:00",
		"1M 2H 3d 4w 5m 6y": "2030-08-01 12:01", // (6y 5m 31d) at once, then 2H 1M
		"  30M  ":           "2024-01-31 10:30",
	} {
		f, err := ParseExpiry(spec)
		if err != nil {
			t.Fatalf("%q: %v", spec, err)
		}
		if got := f(base); !got.Equal(at(want)) {
			t.Errorf("%q from %s = %s, want %s", spec, base, got, want)
		}
	}
	if f, err := ParseExpiry(""); f != nil || err != nil {
		t.Fatalf("empty expiry: %v", err)
	}
	for _, bad := range []string{"1", "d", "1D", "1s", "1h", "-1d", "1d2H", "1.5d", "999999999d"} {
		if _, err := ParseExpiry(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
}

func TestName(t *testing.T) {
	created := time.Date(2024, 3, 4, 15, 4, 5, 0, time.UTC)
	taken := map[string]bool{"snap0": true, "snap1": true, "backup": true}
	has := func(n string) bool { return taken[n] }
	for pattern, want := range map[string]string{
		"":        "snap2",
		"snap%d":  "snap2",
		"auto-%d": "auto-0",
		"{{ creation_date|date:'2006-01-02_15-04-05' }}": "2024-03-04_15-04-05",
		"{{creation_date|date:\"2006-01-02\"}}-%d":       "2024-03-04-0",
		"daily-{{ creation_date | date:'Jan-02' }}":      "daily-Mar-04",
		"backup": "backup-1",
		"a b/c":  "a-b-c",
	} {
		got, err := Name(pattern, created, has)
		if err != nil {
			t.Fatalf("%q: %v", pattern, err)
		}
		if got != want {
			t.Errorf("Name(%q) = %q, want %q", pattern, got, want)
		}
	}
	for _, bad := range []string{"{{ hostname }}", "{{ creation_date|upper }}", "x-{{ creation_date", "%d-%d"} {
		if err := CheckPattern(bad); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "") {
			t.Errorf("CheckPattern(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
