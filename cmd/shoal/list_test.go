package main

import (
	"bytes"
	"encoding/csv"
	"reflect"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func info(name, status, node string, config map[string]string, ipv4 ...string) *shoalv1.ContainerInfo {
	return &shoalv1.ContainerInfo{
		Container: &shoalv1.Container{Name: name, Node: node, ExpandedConfig: config, Profiles: []string{"default", "web"},
			Snapshots: []*shoalv1.Snapshot{{Name: "s1"}}, Pool: "default", ImageFingerprint: "0123456789abcdef0123"},
		State: &shoalv1.ContainerState{Status: status, Ipv4: ipv4},
	}
}

func TestParseColumns(t *testing.T) {
	ct := info("web1", "Running", "node2", map[string]string{"user.role": "db"}, "10.0.0.5", "10.1.0.5")
	for _, tc := range []struct {
		spec   string
		header []string
		values []string
	}{
		{"ns4L", []string{"NAME", "STATE", "IPV4", "LOCATION"}, []string{"web1", "RUNNING", "10.0.0.5,10.1.0.5", "node2"}},
		{"n,s", []string{"NAME", "STATE"}, []string{"web1", "RUNNING"}},
		{"tSPbf", []string{"TYPE", "SNAPSHOTS", "PROFILES", "STORAGE POOL", "BASE IMAGE"}, []string{"CONTAINER", "1", "default,web", "default", "0123456789ab"}},
		{"n,user.role", []string{"NAME", "USER.ROLE"}, []string{"web1", "db"}},
		{"config:user.role:ROLE,user.missing", []string{"ROLE", "USER.MISSING"}, []string{"db", ""}},
		{"p", []string{"PID"}, []string{""}},
	} {
		cols, err := parseColumns(tc.spec)
		if err != nil {
			t.Fatalf("parseColumns(%q): %v", tc.spec, err)
		}
		var header, values []string
		for _, c := range cols {
			header, values = append(header, c.header), append(values, c.value(ct))
		}
		if !reflect.DeepEqual(header, tc.header) || !reflect.DeepEqual(values, tc.values) {
			t.Errorf("parseColumns(%q): %q %q, want %q %q", tc.spec, header, values, tc.header, tc.values)
		}
	}
	for spec, want := range map[string]string{
		"nsx":          "unknown column 'x'",
		"n6":           "column '6' is not available (IPv6",
		"l":            "column 'l' is not available",
		"":             "empty column entry",
		"n,,s":         "empty column entry",
		"devices:eth0": "device columns",
		"user.a:B:C":   "not a config column",
		"config::X":    "not a config column",
	} {
		_, err := parseColumns(spec)
		if err == nil || !strings.HasPrefix(err.Error(), "-c: ") || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseColumns(%q) = %v, want a one-line -c error with %q", spec, err, want)
		}
	}
	// Every letter the error offers is one that parses.
	for _, r := range "ns4tSLPbcfFpNmDu" {
		if _, err := parseColumns(string(r)); err != nil {
			t.Errorf("letter %c: %v", r, err)
		}
	}
}

func TestParseFilters(t *testing.T) {
	cts := []*shoalv1.ContainerInfo{
		info("web1", "Running", "node1", map[string]string{"limits.cpu": "2", "user.role": "front"}),
		info("web2", "Stopped", "node2", map[string]string{"limits.cpu": "1"}),
		info("db1", "Running", "node2", map[string]string{"user.role": "db"}),
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"web1", "web2", "db1"}},
		{[]string{"web"}, []string{"web1", "web2"}},
		{[]string{"web[12]"}, []string{"web1", "web2"}},
		{[]string{"^d"}, []string{"db1"}},
		{[]string{"status=running"}, []string{"web1", "db1"}},
		{[]string{"state=STOPPED"}, []string{"web2"}},
		{[]string{"location=node2"}, []string{"web2", "db1"}},
		{[]string{"status=running", "location=node2"}, []string{"db1"}},
		{[]string{"config.limits.cpu=2"}, []string{"web1"}},
		{[]string{"user.role=db"}, []string{"db1"}},
		{[]string{"config.user.role=front", "web"}, []string{"web1"}},
		{[]string{"type=container", "name=db.*"}, []string{"db1"}},
		{[]string{"type=virtual-machine"}, nil},
		{[]string{"nomatch"}, nil},
	} {
		match, err := parseFilters(tc.args)
		if err != nil {
			t.Fatalf("parseFilters(%q): %v", tc.args, err)
		}
		var got []string
		for _, ct := range cts {
			if match(ct) {
				got = append(got, ct.GetContainer().GetName())
			}
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseFilters(%q) matched %q, want %q", tc.args, got, tc.want)
		}
	}
	for arg, want := range map[string]string{
		"bogus=1":        `unknown key "bogus"`,
		"limits.cpu=2":   "config.limits.cpu",
		"status=runing":  "allowed: running, stopped",
		"type=vm":        "allowed: container, virtual-machine",
		"=x":             `unknown key ""`,
		"config.=x":      `unknown key "config."`,
		"Location=node1": `unknown key "Location"`,
	} {
		_, err := parseFilters([]string{arg})
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), arg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseFilters(%q) = %v, want a one-line error naming it and %q", arg, err, want)
		}
	}
}

func TestPrintTableCSV(t *testing.T) {
	rows := [][]string{{"web1", "RUNNING", "10.0.0.5,10.1.0.5"}, {"a \"quoted\" name", "STOPPED", ""}}
	var b bytes.Buffer
	if err := printTable(&b, "csv", []string{"NAME", "STATE", "IPV4"}, rows); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "NAME") {
		t.Fatalf("csv has a header:\n%s", b.String())
	}
	got, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatalf("csv does not parse: %v", err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("csv read back %q, want %q", got, rows)
	}

	b.Reset()
	if err := printTable(&b, "compact", []string{"NAME", "STATE"}, [][]string{{"web1", "RUNNING"}}); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "web1") {
		t.Fatalf("compact:\n%s", b.String())
	}
}

func TestFormats(t *testing.T) {
	for _, f := range []string{"table", "compact", "csv", "json", "yaml"} {
		if err := checkTableFormat(f); err != nil {
			t.Errorf("checkTableFormat(%q): %v", f, err)
		}
	}
	// Commands that print only tables, json and yaml still refuse csv.
	for _, f := range []string{"csv", "compact", "xml", ""} {
		if err := checkFormat(f); err == nil || !strings.Contains(err.Error(), "allowed: table, json, yaml") {
			t.Errorf("checkFormat(%q) = %v", f, err)
		}
	}
	if err := checkTableFormat("xml"); err == nil || !strings.Contains(err.Error(), "--format") || !strings.Contains(err.Error(), "csv") {
		t.Errorf("checkTableFormat(xml) = %v", err)
	}
}
