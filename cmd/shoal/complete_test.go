package main

import (
	"strings"
	"testing"
)

func TestNameCompletionWired(t *testing.T) {
	root := newRoot()
	for _, path := range []string{"start", "stop", "restart", "delete", "info", "exec", "console", "move", "copy",
		"config set", "config show", "config device add", "snapshot create", "snapshot restore", "file push", "file pull", "profile add"} {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil || c == root || c.ValidArgsFunction == nil {
			t.Errorf("%s: no container-name completion", path)
		}
	}
	if c, _, err := root.Find([]string{"completion", "bash"}); err != nil || c.Name() != "bash" {
		t.Errorf("no completion bash command: %v", err)
	}
}
