package config

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoal-dev/shoal/internal/snapsched"
)

// ErrInvalid marks bad user input; the message names the field and the
// allowed values.
var ErrInvalid = errors.New("invalid")

// InvalidError is a validation error naming a field.
type InvalidError struct {
	Field string
	Msg   string
}

func (e *InvalidError) Error() string { return e.Field + ": " + e.Msg }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &InvalidError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var nameRe = regexp.MustCompile(`^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)

// ValidateName checks a container, snapshot, alias or network name against
// the DNS label rules: 1-63 letters, digits and hyphens, starting with a
// letter and not ending with a hyphen.
func ValidateName(field, name string) error {
	if !nameRe.MatchString(name) {
		return invalid(field, "%q is not a valid name (1-63 letters, digits and '-', starting with a letter, not ending with '-')", name)
	}
	return nil
}

// key describes one config key.
type key struct {
	check func(v string) error
	// live is true when the key can change while the container runs.
	live bool
	help string
}

var keys = map[string]key{
	"limits.cpu":                              {check: checkCPU, live: true, help: "a CPU count (e.g. 2) or a set (e.g. 0-1,3)"},
	"limits.cpu.allowance":                    {check: checkAllowance, live: true, help: "a percentage (50%) or a quota (25ms/100ms)"},
	"limits.memory":                           {check: checkMemory, live: true, help: "a size (256MiB, 1GB) or a percentage of host memory (50%)"},
	"limits.memory.swap":                      {check: checkBool, live: true, help: "true or false"},
	"limits.processes":                        {check: checkPositiveInt, live: true, help: "a positive integer"},
	"limits.disk.priority":                    {check: checkPriority, live: true, help: "an integer from 0 to 10"},
	"boot.autostart":                          {check: checkBool, live: true, help: "true or false"},
	"security.privileged":                     {check: checkBool, live: false, help: "true or false"},
	"security.nesting":                        {check: checkBool, live: false, help: "true or false"},
	"scheduler.group":                         {check: checkGroup, live: true, help: "a group name (containers of a group spread across nodes)"},
	"scheduler.group.max_per_node":            {check: checkNonNegativeInt, live: true, help: "a non-negative integer (1: every member on a distinct node)"},
	"scheduler.constraint":                    {check: checkConstraint, live: true, help: "node labels KEY=VALUE[,KEY=VALUE...]"},
	"migration.mode":                          {check: checkOneOf(MigrationModes...), live: true, help: strings.Join(MigrationModes, ", ")},
	"migration.stateful":                      {check: checkBool, live: true, help: "true or false"},
	"migration.incremental.memory":            {check: checkBool, live: true, help: "true or false"},
	"migration.incremental.memory.iterations": {check: checkPositiveInt, live: true, help: "a positive integer"},
	"migration.incremental.memory.goal":       {check: checkPercent, live: true, help: "a percentage of memory pages, 1 to 100"},
	"ha.enabled":                              {check: checkBool, live: true, help: "true or false"},
	"ha.replicas":                             {check: checkReplicas, live: true, help: "an integer from 1 to 4"},
	"ha.rpo":                                  {check: checkRPO, live: true, help: "a duration from 1s to 24h (10s, 1m)"},
	// Scheduled snapshots (snapshots.go, internal/snapsched).
	"snapshots.schedule":         {check: checkSchedule, live: true, help: snapsched.ScheduleHelp},
	"snapshots.schedule.stopped": {check: checkBool, live: true, help: "true or false (take scheduled snapshots of a stopped container too)"},
	"snapshots.expiry":           {check: checkExpiry, live: true, help: snapsched.ExpiryHelp},
	"snapshots.pattern":          {check: checkPattern, live: true, help: snapsched.PatternHelp},
}

// checkReplicas accepts a replica count from 1 to 4.
func checkReplicas(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 4 {
		return errors.New("not an integer from 1 to 4")
	}
	return nil
}

// checkRPO accepts a duration from 1 s to 24 h.
func checkRPO(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second || d > 24*time.Hour {
		return errors.New("not a duration from 1s to 24h")
	}
	return nil
}

// MigrationModes are the values of migration.mode: how a live move moves
// memory. auto picks the best this pair of hosts can do.
var MigrationModes = []string{"auto", "precopy", "postcopy", "stop-and-copy"}

// checkOneOf accepts exactly the listed values.
func checkOneOf(values ...string) func(string) error {
	return func(v string) error {
		for _, x := range values {
			if v == x {
				return nil
			}
		}
		return errors.New("unknown value")
	}
}

// checkPercent accepts an integer from 1 to 100.
func checkPercent(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100 {
		return errors.New("not an integer from 1 to 100")
	}
	return nil
}

// Keys returns the known config keys, sorted (the prefixes user.* and
// environment.* are also accepted).
func Keys() []string {
	out := make([]string, 0, len(keys))
	for k := range keys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ValidateKey checks one key and value.
func ValidateKey(k, v string) error {
	if strings.HasPrefix(k, "user.") || strings.HasPrefix(k, "environment.") {
		if len(k) == strings.Index(k, ".")+1 {
			return invalid(k, "key needs a name after the prefix")
		}
		return nil
	}
	if strings.HasPrefix(k, "volatile.") {
		return invalid(k, "volatile.* keys are internal and cannot be set")
	}
	spec, ok := keys[k]
	if !ok {
		return invalid(k, "unknown config key (known: %s, user.*, environment.*)", strings.Join(Keys(), ", "))
	}
	if err := spec.check(v); err != nil {
		return invalid(k, "%q is not valid: %v (want %s)", v, err, spec.help)
	}
	return nil
}

// Validate checks every key of a config a user gave.
func Validate(cfg map[string]string) error {
	return validate(cfg, false)
}

// ValidateStored checks a container's whole config after a change: the
// server's own volatile.* keys are allowed there.
func ValidateStored(cfg map[string]string) error {
	return validate(cfg, true)
}

func validate(cfg map[string]string, allowVolatile bool) error {
	ks := make([]string, 0, len(cfg))
	for k := range cfg {
		if allowVolatile && strings.HasPrefix(k, "volatile.") {
			continue
		}
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		if err := ValidateKey(k, cfg[k]); err != nil {
			return err
		}
	}
	_, err := ParseLimits(cfg)
	return err
}

// CreationOnly reports whether a key can only be set when a container is
// created.
func CreationOnly(k string) bool {
	spec, ok := keys[k]
	return ok && !spec.live && strings.HasPrefix(k, "security.")
}

func checkBool(v string) error {
	_, err := ParseBool(v)
	return err
}

// ParseBool accepts true/false, yes/no, on/off and 1/0.
func ParseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0", "":
		return false, nil
	}
	return false, errors.New("not a boolean")
}

func checkPositiveInt(v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return errors.New("not a positive integer")
	}
	return nil
}

func checkNonNegativeInt(v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return errors.New("not a non-negative integer")
	}
	return nil
}

func checkGroup(v string) error {
	if !nameRe.MatchString(v) {
		return errors.New("not a valid name")
	}
	return nil
}

func checkConstraint(v string) error {
	for _, kv := range strings.Split(v, ",") {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", kv)
		}
	}
	return nil
}

func checkPriority(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 10 {
		return errors.New("out of range")
	}
	return nil
}

func checkCPU(v string) error {
	_, err := ParseCPUSet(v, runtime.NumCPU())
	return err
}

func checkAllowance(v string) error {
	_, _, err := ParseAllowance(v, runtime.NumCPU())
	return err
}

func checkMemory(v string) error {
	_, err := ParseMemory(v, HostMemory())
	return err
}

var cpuRangeRe = regexp.MustCompile(`^\d+(-\d+)?(,\d+(-\d+)?)*$`)

// ParseCPUSet turns limits.cpu into a cpuset string: a count N gives CPUs
// 0..N-1 (the width the scheduler reserves; the node picks which N CPUs,
// see Limits.CPUCount); a set such as "0-1,3" is checked against the
// host's CPUs.
func ParseCPUSet(v string, hostCPUs int) (string, error) {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 || n > hostCPUs {
			return "", fmt.Errorf("count must be 1..%d: this host has %d CPUs", hostCPUs, hostCPUs)
		}
		if n == 1 {
			return "0", nil
		}
		return fmt.Sprintf("0-%d", n-1), nil
	}
	if !cpuRangeRe.MatchString(v) {
		return "", errors.New("not a count or a CPU set")
	}
	for _, part := range strings.Split(v, ",") {
		lo, hi, _ := strings.Cut(part, "-")
		a, _ := strconv.Atoi(lo)
		b := a
		if hi != "" {
			b, _ = strconv.Atoi(hi)
		}
		if a > b || b >= hostCPUs {
			return "", fmt.Errorf("CPU range %q outside 0-%d", part, hostCPUs-1)
		}
	}
	return v, nil
}

// ParseAllowance turns limits.cpu.allowance into a CFS quota and period in
// microseconds. A percentage is of one CPU over a 100 ms period, from 1%
// (the kernel's 1 ms minimum quota) to 100% per host CPU; a quota/period
// pair has the kernel's bounds (both ≥ 1 ms, period ≤ 1 s) and the same
// ceiling of every host CPU for the whole period.
func ParseAllowance(v string, hostCPUs int) (quotaUs, periodUs int64, err error) {
	if strings.HasSuffix(v, "%") {
		p, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		// !(p >= 1) also refuses NaN.
		if err != nil || !(p >= 1) || p > float64(100*hostCPUs) {
			return 0, 0, fmt.Errorf("percentage must be in [1, %d]", 100*hostCPUs)
		}
		return int64(p * 1000), 100000, nil
	}
	q, per, ok := strings.Cut(v, "/")
	if !ok {
		return 0, 0, errors.New("neither a percentage nor quota/period")
	}
	qd, err1 := time.ParseDuration(q)
	pd, err2 := time.ParseDuration(per)
	if err1 != nil || err2 != nil || qd < time.Millisecond || pd < time.Millisecond || pd > time.Second {
		return 0, 0, errors.New("quota and period must be durations ≥ 1ms, period ≤ 1s")
	}
	if qd.Microseconds() > pd.Microseconds()*int64(hostCPUs) {
		return 0, 0, fmt.Errorf("quota must be at most %d × the period (the host's CPUs)", hostCPUs)
	}
	return qd.Microseconds(), pd.Microseconds(), nil
}

var sizeRe = regexp.MustCompile(`^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$`)

var units = map[string]float64{
	"": 1, "B": 1,
	"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	"k": 1 << 10, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40,
}

// ParseSize parses a byte size such as "256MiB", "1GB" or "4096".
func ParseSize(v string) (int64, error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, errors.New("not a size")
	}
	u, ok := units[m[2]]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q (use B, kB, MB, GB, KiB, MiB, GiB)", m[2])
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, err
	}
	b := f * u
	if b < 1 || b > math.MaxInt64/2 {
		return 0, errors.New("size out of range")
	}
	return int64(b), nil
}

// ParseMemory parses limits.memory: a size or a percentage of host memory.
// Anything under 4 MiB is refused (no container boots in less).
func ParseMemory(v string, hostBytes int64) (int64, error) {
	var b int64
	if strings.HasSuffix(v, "%") {
		p, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
		if err != nil || p <= 0 || p > 100 {
			return 0, errors.New("percentage must be in (0, 100]")
		}
		b = int64(float64(hostBytes) * p / 100)
	} else {
		var err error
		if b, err = ParseSize(v); err != nil {
			return 0, err
		}
	}
	if b < 4<<20 {
		return 0, errors.New("below the 4MiB minimum")
	}
	return b, nil
}

// HostMemory returns the host's total memory in bytes.
func HostMemory() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// Limits are the resource limits a config asks for; zero values mean unset.
type Limits struct {
	// CPUSet is the set limits.cpu names; for a count N it is 0..N-1 and
	// CPUCount is N: the node then chooses which N CPUs (node/cpuset.go).
	CPUSet       string
	CPUCount     int
	CPUQuotaUs   int64
	CPUPeriodUs  int64
	MemoryBytes  int64
	Swap         bool
	Processes    int64
	DiskPriority int // -1 when unset
}

// ParseLimits extracts the limits.* keys of a config.
func ParseLimits(cfg map[string]string) (Limits, error) {
	l := Limits{DiskPriority: -1}
	var err error
	if v, ok := cfg["limits.cpu"]; ok {
		if l.CPUSet, err = ParseCPUSet(v, runtime.NumCPU()); err != nil {
			return l, invalid("limits.cpu", "%q: %v", v, err)
		}
		if n, err := strconv.Atoi(v); err == nil {
			l.CPUCount = n
		}
	}
	if v, ok := cfg["limits.cpu.allowance"]; ok {
		if l.CPUQuotaUs, l.CPUPeriodUs, err = ParseAllowance(v, runtime.NumCPU()); err != nil {
			return l, invalid("limits.cpu.allowance", "%q: %v", v, err)
		}
	}
	if v, ok := cfg["limits.memory"]; ok {
		if l.MemoryBytes, err = ParseMemory(v, HostMemory()); err != nil {
			return l, invalid("limits.memory", "%q: %v", v, err)
		}
	}
	if v, ok := cfg["limits.memory.swap"]; ok {
		l.Swap, _ = ParseBool(v)
	}
	if v, ok := cfg["limits.processes"]; ok {
		l.Processes, _ = strconv.ParseInt(v, 10, 64)
	}
	if v, ok := cfg["limits.disk.priority"]; ok {
		l.DiskPriority, _ = strconv.Atoi(v)
	}
	return l, nil
}

// Bool returns a boolean key's value (false when unset or malformed).
func Bool(cfg map[string]string, k string) bool {
	b, _ := ParseBool(cfg[k])
	return b
}
