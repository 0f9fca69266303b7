package idmap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFromFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		uid     string
		gid     string
		want    Map
		wantErr error
	}{
		{"ok", "# c\nalice:100000:65536\nroot:1000000:1000000000\nroot:5:70000\n", "root:2000000:65536\n", Map{1000000, 2000000, 65536}, nil},
		{"missing", "alice:100000:65536\n", "root:1:65536\n", Map{}, ErrNoRange},
		{"small", "root:1000000:1000\n", "root:1000000:65536\n", Map{}, ErrNoRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := write(tc.name+".uid", tc.uid)
			g := write(tc.name+".gid", tc.gid)
			got, err := FromFiles("root", u, g)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestMapConversions(t *testing.T) {
	m := Map{HostUID: 1000000, HostGID: 2000000, Size: 65536}
	want := []string{"lxc.idmap = u 0 1000000 65536", "lxc.idmap = g 0 2000000 65536"}
	if got := m.LXCConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("LXCConfig = %q", got)
	}
	if u, g := m.ToHost(0, 5); u != 1000000 || g != 2000005 {
		t.Fatalf("ToHost = %d %d", u, g)
	}
	if u, g := m.ToHost(70000, 1); u != 70000 || g != 2000001 {
		t.Fatalf("ToHost out of range = %d %d", u, g)
	}
	if u, g := m.ToContainer(1000033, 2000000); u != 33 || g != 0 {
		t.Fatalf("ToContainer = %d %d", u, g)
	}
	if !m.Contains(65535, 0) || m.Contains(65536, 0) {
		t.Fatal("Contains wrong")
	}
}

func TestShift(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("TestShift needs root (chown)")
		}
		t.Skip("TestShift needs root (chown)")
	}
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	suid := filepath.Join(root, "usr/bin/suid")
	must(os.WriteFile(suid, []byte("x"), 0o755))
	must(os.Chmod(suid, 0o4755|os.ModeSetuid))
	must(unix.Chmod(suid, 0o4755))
	capf := filepath.Join(root, "usr/bin/capped")
	must(os.WriteFile(capf, []byte("x"), 0o755))
	// VFS_CAP_REVISION_2, effective, cap_net_raw permitted.
	capBlob := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Setxattr(capf, capXattr, capBlob, 0))
	user := filepath.Join(root, "home")
	must(os.WriteFile(user, nil, 0o600))
	must(os.Lchown(user, 1000, 1001))
	must(os.Symlink("/etc/passwd", filepath.Join(root, "link")))

	m := Map{HostUID: 1000000, HostGID: 1000000, Size: 65536}
	must(Shift(context.Background(), root, m))
	must(Shift(context.Background(), root, m)) // idempotent

	check := func(p string, uid, gid uint32) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		must(unix.Lstat(p, &st))
		if st.Uid != uid || st.Gid != gid {
			t.Fatalf("%s owned by %d:%d, want %d:%d", p, st.Uid, st.Gid, uid, gid)
		}
		return st
	}
	check(root, 1000000, 1000000)
	if st := check(suid, 1000000, 1000000); st.Mode&unix.S_ISUID == 0 {
		t.Fatalf("setuid bit lost: %o", st.Mode)
	}
	check(user, 1001000, 1001001)
	check(filepath.Join(root, "link"), 1000000, 1000000)
	var st unix.Stat_t
	must(unix.Stat("/etc/passwd", &st))
	if st.Uid != 0 {
		t.Fatal("symlink was followed")
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(capf, capXattr, buf)
	must(err)
	if n != len(capBlob) {
		t.Fatalf("file capabilities lost: %d bytes", n)
	}
}

func BenchmarkShift(b *testing.B) {
	root := b.TempDir()
	for i := range 70 {
		d := filepath.Join(root, "d", string(rune('a'+i%26)), string(rune('a'+i/26)))
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := range 100 {
			if err := os.WriteFile(filepath.Join(d, string(rune('A'+j%26))+string(rune('A'+j/26))), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	m := Map{HostUID: 1000000, HostGID: 1000000, Size: 65536}
	for b.Loop() {
		if err := Shift(context.Background(), root, m); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := unshift(root); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// unshift chowns everything back to 0:0 for the next benchmark round.
func unshift(root string) error {
	return filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return unix.Lchown(p, 0, 0)
	})
}
