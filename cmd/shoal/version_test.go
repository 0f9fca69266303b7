package main

import (
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func TestServerLine(t *testing.T) {
	members := []*shoalv1.Member{
		{Name: "node1", Address: "10.0.0.1:8443", Role: "leader", Status: "online"},
		{Name: "node2", Address: "10.0.0.2:8443", Role: "voter", Status: "online"},
	}
	if got := serverLine("remote prod (https://10.0.0.2:8443)", "https://10.0.0.2:8443", members); !strings.HasPrefix(got, "node2 via remote prod") {
		t.Errorf("by address: %q", got)
	}
	if got := serverLine("/run/shoal.socket", "", members); !strings.Contains(got, "cluster of 2: node1, node2") {
		t.Errorf("socket of a cluster: %q", got)
	}
	if got := serverLine("/run/shoal.socket", "", members[:1]); !strings.HasPrefix(got, "node1 via /run/shoal.socket (leader, online)") {
		t.Errorf("one member: %q", got)
	}
	if v := clientVersion(); v == "" {
		t.Error("no client version")
	}
}
