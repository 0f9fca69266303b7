// Package snapsched parses what LXD's snapshot keys hold: snapshots.schedule
// (cron expressions and aliases), snapshots.expiry ("1M 2H 3d 4w 5m 6y")
// and snapshots.pattern ("snap%d", "{{ creation_date|date:'2006-01-02' }}").
// It is pure: no clock, no I/O; callers pass the time.
package snapsched

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid marks a value that does not parse; the message says why.
var ErrInvalid = errors.New("invalid")

// ScheduleHelp is what snapshots.schedule accepts, for error messages.
const ScheduleHelp = "a cron expression MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK (e.g. '0 6 * * *', '*/15 * * * 1-5'), " +
	"an alias @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually, or a comma-separated list of those"

// ExpiryHelp is what snapshots.expiry accepts, for error messages.
const ExpiryHelp = "a space-separated list of NUMBER+UNIT, units M (minutes), H (hours), d (days), w (weeks), m (months), y (years): e.g. '1d', '2w 3d', '30M'"

// PatternHelp is what snapshots.pattern accepts, for error messages.
const PatternHelp = "a name that may hold %d (the lowest free number) and {{ creation_date|date:'LAYOUT' }} (a Go time layout, e.g. '2006-01-02_15-04-05')"

// Schedule is a parsed snapshots.schedule: it fires at every minute one of
// its expressions matches.
type Schedule struct {
	exprs []cron
}

// cron is one 5-field expression: the allowed values of each field.
type cron struct {
	minute, hour, dom, month, dow uint64 // bit i set: value i allowed
	domStar, dowStar              bool
}

var aliases = map[string]string{
	"@hourly":   "0 * * * *",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@weekly":   "0 0 * * 0",
	"@monthly":  "0 0 1 * *",
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
}

var (
	monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dowNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

// ParseSchedule parses snapshots.schedule: one cron expression or alias, or
// a comma-separated list of them (as LXD: "@daily, @hourly", "0 6 * * *,
// 0 18 * * *"). An empty value is no schedule (nil, nil).
func ParseSchedule(v string) (*Schedule, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, nil
	}
	var parts []string
	for _, p := range splitList(v) {
		if p = strings.TrimSpace(p); p == "" {
			return nil, fmt.Errorf("%w: an empty entry in the list", ErrInvalid)
		}
		parts = append(parts, p)
	}
	s := &Schedule{}
	for _, p := range parts {
		if strings.HasPrefix(p, "@") {
			a, ok := aliases[strings.ToLower(p)]
			if !ok {
				return nil, fmt.Errorf("%w: unknown alias %q", ErrInvalid, p)
			}
			p = a
		}
		c, err := parseCron(p)
		if err != nil {
			return nil, err
		}
		s.exprs = append(s.exprs, c)
	}
	return s, nil
}

// splitList splits a list of expressions where a comma is followed by a
// space or an alias, or ends an alias: a cron field's own commas are
// neither ("0 1,13 * * *" is one expression).
func splitList(v string) []string {
	var out []string
	start := 0
	for i := 0; i < len(v); i++ {
		if v[i] != ',' {
			continue
		}
		next := ""
		if i+1 < len(v) {
			next = v[i+1:]
		}
		if strings.HasPrefix(next, "@") || strings.HasPrefix(next, " ") || strings.HasPrefix(next, "\t") ||
			strings.HasPrefix(strings.TrimSpace(v[start:i]), "@") {
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

func parseCron(expr string) (cron, error) {
	f := strings.Fields(expr)
	if len(f) != 5 {
		return cron{}, fmt.Errorf("%w: %q has %d fields, want 5 (minute hour day-of-month month day-of-week)", ErrInvalid, expr, len(f))
	}
	var c cron
	var err error
	if c.minute, err = parseField(f[0], 0, 59, nil); err != nil {
		return cron{}, fmt.Errorf("%w: minute %v", ErrInvalid, err)
	}
	if c.hour, err = parseField(f[1], 0, 23, nil); err != nil {
		return cron{}, fmt.Errorf("%w: hour %v", ErrInvalid, err)
	}
	if c.dom, err = parseField(f[2], 1, 31, nil); err != nil {
		return cron{}, fmt.Errorf("%w: day of month %v", ErrInvalid, err)
	}
	if c.month, err = parseField(f[3], 1, 12, monthNames); err != nil {
		return cron{}, fmt.Errorf("%w: month %v", ErrInvalid, err)
	}
	if c.dow, err = parseField(f[4], 0, 7, dowNames); err != nil {
		return cron{}, fmt.Errorf("%w: day of week %v", ErrInvalid, err)
	}
	if c.dow&(1<<7) != 0 { // 7 is Sunday too
		c.dow |= 1
	}
	c.domStar, c.dowStar = f[2] == "*" || strings.HasPrefix(f[2], "*/"), f[4] == "*" || strings.HasPrefix(f[4], "*/")
	return c, nil
}

// parseField parses one field: *, N, N-M, each with an optional /STEP,
// comma-separated; names (names[0] is the value lo) stand for numbers.
func parseField(f string, lo, hi int, names []string) (uint64, error) {
	var bits uint64
	num := func(s string) (int, error) {
		for i, n := range names {
			if strings.EqualFold(s, n) {
				return lo + i, nil
			}
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%q is not a number from %d to %d", s, lo, hi)
		}
		return n, nil
	}
	for _, part := range strings.Split(f, ",") {
		rng, stepS, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepS)
			if err != nil || n < 1 || n > hi-lo+1 {
				return 0, fmt.Errorf("step %q is not a number from 1 to %d", stepS, hi-lo+1)
			}
			step = n
		}
		var from, to int
		switch {
		case rng == "*":
			from, to = lo, hi
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if from, err = num(a); err != nil {
				return 0, err
			}
			if to, err = num(b); err != nil {
				return 0, err
			}
			if from > to {
				return 0, fmt.Errorf("range %q runs backwards", rng)
			}
		default:
			n, err := num(rng)
			if err != nil {
				return 0, err
			}
			from, to = n, n
			if hasStep {
				to = hi
			}
		}
		for i := from; i <= to; i += step {
			bits |= 1 << i
		}
	}
	return bits, nil
}

// Matches reports whether the schedule fires in t's minute (t's own
// location).
func (s *Schedule) Matches(t time.Time) bool {
	if s == nil {
		return false
	}
	for _, c := range s.exprs {
		if c.matches(t) {
			return true
		}
	}
	return false
}

func (c cron) matches(t time.Time) bool {
	if c.minute&(1<<t.Minute()) == 0 || c.hour&(1<<t.Hour()) == 0 || c.month&(1<<int(t.Month())) == 0 {
		return false
	}
	dom, dow := c.dom&(1<<t.Day()) != 0, c.dow&(1<<int(t.Weekday())) != 0
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dow
	case c.dowStar:
		return dom
	default: // both restricted: either, as cron does
		return dom || dow
	}
}

// Next is the first minute after t at which the schedule fires (zero if it
// never does within five years, e.g. "0 0 31 2 *").
func (s *Schedule) Next(t time.Time) time.Time {
	if s == nil {
		return time.Time{}
	}
	t = t.Truncate(time.Minute).Add(time.Minute)
	for end := t.AddDate(5, 0, 0); t.Before(end); t = t.Add(time.Minute) {
		if s.Matches(t) {
			return t
		}
	}
	return time.Time{}
}

var expiryPart = regexp.MustCompile(`^(\d+)(M|H|d|w|m|y)$`)

// ParseExpiry checks an expiry expression and returns a function from a
// creation time to the expiry time. An empty value never expires (nil,
// nil).
func ParseExpiry(v string) (func(time.Time) time.Time, error) {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return nil, nil
	}
	type part struct {
		n    int
		unit string
	}
	var parts []part
	for _, f := range fields {
		m := expiryPart.FindStringSubmatch(f)
		if m == nil {
			return nil, fmt.Errorf("%w: %q is not NUMBER+UNIT (units M, H, d, w, m, y)", ErrInvalid, f)
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n > 100000 {
			return nil, fmt.Errorf("%w: %q is too large", ErrInvalid, f)
		}
		parts = append(parts, part{n, m[2]})
	}
	// As LXD: the units are summed, dates added at once, then the clock.
	var years, months, days int
	var clock time.Duration
	for _, p := range parts {
		switch p.unit {
		case "M":
			clock += time.Duration(p.n) * time.Minute
		case "H":
			clock += time.Duration(p.n) * time.Hour
		case "d":
			days += p.n
		case "w":
			days += 7 * p.n
		case "m":
			months += p.n
		case "y":
			years += p.n
		}
	}
	return func(t time.Time) time.Time {
		return t.AddDate(years, months, days).Add(clock)
	}, nil
}

// DefaultPattern names snapshots when snapshots.pattern is not set.
const DefaultPattern = "snap%d"

var tag = regexp.MustCompile(`\{\{\s*([^}]*?)\s*\}\}`)
var dateFilter = regexp.MustCompile(`^creation_date(?:\s*\|\s*date\s*:\s*(?:'([^']*)'|"([^"]*)"))?$`)

// CheckPattern checks a snapshots.pattern.
func CheckPattern(p string) error {
	_, err := render(p, time.Unix(0, 0).UTC())
	return err
}

// render fills the pattern's tags for a creation time; "%d" stays.
func render(p string, created time.Time) (string, error) {
	var err error
	out := tag.ReplaceAllStringFunc(p, func(t string) string {
		m := dateFilter.FindStringSubmatch(tag.FindStringSubmatch(t)[1])
		if m == nil {
			err = fmt.Errorf("%w: %s: only {{ creation_date }} and {{ creation_date|date:'LAYOUT' }} are known", ErrInvalid, t)
			return ""
		}
		layout := m[1] + m[2]
		if layout == "" {
			layout = time.RFC3339
		}
		return created.Format(layout)
	})
	if err != nil {
		return "", err
	}
	if strings.Count(out, "%d") > 1 {
		return "", fmt.Errorf("%w: %%d more than once", ErrInvalid)
	}
	if strings.Contains(out, "{{") || strings.Contains(out, "}}") {
		return "", fmt.Errorf("%w: an unclosed {{ }} tag", ErrInvalid)
	}
	return out, nil
}

// Name makes a snapshot's name from a pattern (empty: DefaultPattern) and
// its creation time: "%d" becomes the lowest number from 0 up that gives
// a name taken does not hold; without "%d" a taken name gets "-1", "-2"...
// appended (as LXD). Characters a snapshot name may not hold (anything but
// letters, digits, '-', '_', '.', ':') become '-'.
func Name(pattern string, created time.Time, taken func(string) bool) (string, error) {
	if pattern == "" {
		pattern = DefaultPattern
	}
	base, err := render(pattern, created)
	if err != nil {
		return "", err
	}
	base = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == ':', r == '%':
			return r
		}
		return '-'
	}, base)
	if strings.Contains(base, "%d") {
		for i := 0; i < 1<<20; i++ {
			n := strings.Replace(base, "%d", strconv.Itoa(i), 1)
			if !taken(n) {
				return n, nil
			}
		}
		return "", fmt.Errorf("%w: no free number for %q", ErrInvalid, pattern)
	}
	if base == "" {
		return "", fmt.Errorf("%w: the pattern gives an empty name", ErrInvalid)
	}
	if !taken(base) {
		return base, nil
	}
	for i := 1; ; i++ {
		if n := fmt.Sprintf("%s-%d", base, i); !taken(n) {
			return n, nil
		}
	}
}
