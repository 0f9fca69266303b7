package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestPlanPushTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	os.MkdirAll(filepath.Join(dir, "sub", "deep"), 0o755)
	os.Chmod(filepath.Join(dir, "sub"), 0o750)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("hi"), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "run.sh"), []byte("#!/bin/sh"), 0o755)
	os.Symlink("index.html", filepath.Join(dir, "home.html"))

	plan, err := planPush(dir, "/var/www/", true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOps := []string{
		"d", "0755", "/var/www/site",
		"l", "index.html", "/var/www/site/home.html",
		"d", "0750", "/var/www/site/sub",
		"d", "0755", "/var/www/site/sub/deep",
	}
	if !reflect.DeepEqual(plan.dirOps, wantOps) {
		t.Errorf("dir ops %q, want %q", plan.dirOps, wantOps)
	}
	wantFiles := []pushFile{
		{filepath.Join(dir, "index.html"), "/var/www/site/index.html", 0o644},
		{filepath.Join(dir, "sub", "run.sh"), "/var/www/site/sub/run.sh", 0o755},
	}
	if !reflect.DeepEqual(plan.files, wantFiles) {
		t.Errorf("files %+v, want %+v", plan.files, wantFiles)
	}

	// -p makes the parent first; --mode replaces the files' modes only.
	m := uint32(0o600)
	plan, err = planPush(dir, "/srv/new", true, true, &m)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plan.dirOps[:6], []string{"p", "-", "/srv/new", "d", "0755", "/srv/new/site"}) {
		t.Errorf("with -p: %q", plan.dirOps)
	}
	for _, f := range plan.files {
		if f.mode != 0o600 {
			t.Errorf("--mode: %s has %o", f.remote, f.mode)
		}
	}

	// A FIFO in the tree is refused before anything is sent.
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := planPush(dir, "/x/", true, false, nil); err == nil || !strings.Contains(err.Error(), "pipe") {
		t.Errorf("a FIFO in the tree: %v", err)
	}
}

func TestPlanPushFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	os.WriteFile(f, []byte("x"), 0o640)
	for _, tc := range []struct {
		dst        string
		createDirs bool
		remote     string
		ops        []string
	}{
		{"/etc/app.conf", false, "/etc/app.conf", nil},
		{"/etc/", false, "/etc/app.conf", nil},
		{"/etc/app/app.conf", true, "/etc/app/app.conf", []string{"p", "-", "/etc/app"}},
	} {
		plan, err := planPush(f, tc.dst, false, tc.createDirs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.files) != 1 || plan.files[0].remote != tc.remote || plan.files[0].mode != 0o640 || !reflect.DeepEqual(plan.dirOps, tc.ops) {
			t.Errorf("push to %s: %+v", tc.dst, plan)
		}
	}
	if _, err := planPush(dir, "/etc/", false, false, nil); err == nil || !strings.Contains(err.Error(), "-r") {
		t.Errorf("a directory without -r: %v", err)
	}
}
