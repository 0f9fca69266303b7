package config

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"c1", true}, {"web-1", true}, {"A", true},
		{"", false}, {"1abc", false}, {"-a", false}, {"a-", false}, {"a_b", false},
		{"a.b", false}, {"../x", false},
		{"a234567890123456789012345678901234567890123456789012345678901234", false},
	} {
		err := ValidateName("name", tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateName(%q) error is not ErrInvalid", tc.name)
		}
	}
}

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		k, v string
		ok   bool
	}{
		{"limits.memory", "256MiB", true},
		{"limits.memory", "1GB", true},
		{"limits.memory", "50%", true},
		{"limits.memory", "1KiB", false},
		{"limits.memory", "lots", false},
		{"limits.cpu", "1", true},
		{"limits.cpu", "0", false},
		{"limits.cpu", "0-0", true},
		{"limits.cpu", "999", false},
		{"limits.cpu.allowance", "50%", true},
		{"limits.cpu.allowance", "25ms/100ms", true},
		{"limits.cpu.allowance", "fast", false},
		{"limits.processes", "200", true},
		{"limits.processes", "-1", false},
		{"limits.disk.priority", "10", true},
		{"limits.disk.priority", "11", false},
		{"security.privileged", "true", true},
		{"security.privileged", "maybe", false},
		{"boot.autostart", "false", true},
		{"user.note", "anything", true},
		{"user.", "x", false},
		{"environment.FOO", "bar", true},
		{"volatile.eth0.hwaddr", "x", false},
		{"limits.bogus", "1", false},
	} {
		err := ValidateKey(tc.k, tc.v)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q, %q) = %v, want ok=%v", tc.k, tc.v, err, tc.ok)
		}
		var ie *InvalidError
		if err != nil && (!errors.As(err, &ie) || ie.Field != tc.k) {
			t.Errorf("ValidateKey(%q) error %v does not name the field", tc.k, err)
		}
	}
}

func TestParseLimits(t *testing.T) {
	l, err := ParseLimits(map[string]string{
		"limits.memory": "256MiB", "limits.cpu": "1", "limits.cpu.allowance": "50%",
		"limits.processes": "200", "limits.disk.priority": "5",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{CPUSet: "0", CPUCount: 1, CPUQuotaUs: 50000, CPUPeriodUs: 100000, MemoryBytes: 256 << 20, Processes: 200, DiskPriority: 5}
	if l != want {
		t.Fatalf("ParseLimits = %+v, want %+v", l, want)
	}
	l, err = ParseLimits(nil)
	if err != nil || l.DiskPriority != -1 || l.MemoryBytes != 0 {
		t.Fatalf("empty limits = %+v, %v", l, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "1KiB": 1024, "1kB": 1000, "1.5GiB": 3 << 29, "2M": 2 << 20} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1XB", "-1"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}

func TestCPUCountAboveHost(t *testing.T) {
	_, err := ParseCPUSet("3", 2)
	if err == nil || err.Error() != "count must be 1..2: this host has 2 CPUs" {
		t.Fatalf("ParseCPUSet(3) on 2 CPUs: %v", err)
	}
	if err := ValidateKey("limits.cpu", "9999"); err == nil || !strings.Contains(err.Error(), "limits.cpu") || !strings.Contains(err.Error(), "CPUs") {
		t.Fatalf("ValidateKey(limits.cpu=9999): %v", err)
	}
}
