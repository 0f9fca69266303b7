package api

import "testing"

func TestChangedCreationOnly(t *testing.T) {
	if k := changedCreationOnly(nil, nil); k != "" {
		t.Fatalf("nil configs: %q", k)
	}
	if k := changedCreationOnly(nil, map[string]string{"security.privileged": "true", "limits.cpu": "1"}); k != "security.privileged" {
		t.Fatalf("privileged set: %q", k)
	}
	if k := changedCreationOnly(map[string]string{"security.nesting": "true"}, map[string]string{"security.nesting": "true", "user.a": "b"}); k != "" {
		t.Fatalf("unchanged: %q", k)
	}
}
