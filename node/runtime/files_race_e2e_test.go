package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/internal/inroot"
	"github.com/shoal-dev/shoal/node/runtime/runtimetest"
)

// TestFilesRace runs a hostile process in a container that keeps swapping
// /tmp/x, atomically, between a real directory and symlinks that lead out
// of the container if the host follows them by host path: to the absolute
// host path of a canary directory, to "/", and to that path again through
// "../" climbs. Meanwhile the host pushes and pulls through /tmp/x hundreds
// of times, with openat2 and with the per-component walk of kernels
// without it. The canary holds a secret file and a symlink ("pivot") to a
// file only the container has: a pull that returns the secret read the
// host's file, and one that returns the pivot's target followed the host's
// symlink (the host-path walk the runtime used to do before opening). So
// nothing may be created in the canary, no pull may return either, and
// every push that succeeded must have landed inside the container.
func TestFilesRace(t *testing.T) {
	rt := newRuntime(t)
	spec := testContainer(t, rt, false, false, nil)
	buildFlipper(t, filepath.Join(spec.Rootfs, "bin", "flipper"))
	ctx := context.Background()
	if err := rt.Start(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}

	canary := t.TempDir()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	secret := "host-secret-" + hex.EncodeToString(rnd[:])
	flag := "pivot-target-" + hex.EncodeToString(rnd[:])
	if err := os.WriteFile(filepath.Join(canary, "secret"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/shoal-pivot/flag", filepath.Join(canary, "pivot")); err != nil {
		t.Fatal(err)
	}
	climb := strings.Repeat("../", 12) + strings.TrimPrefix(canary, "/")
	mustRun(t, rt, spec.Name, "sh", "-c", fmt.Sprintf(`set -e
mkdir -p /tmp/x /shoal-pivot
echo inside > /tmp/x/inside
echo %s > /shoal-pivot/flag
ln -s %s /tmp/l1
ln -s / /tmp/l2
ln -s %s /tmp/l3
/bin/flipper /tmp/x /tmp/l1 /tmp/l2 /tmp/l3 </dev/null >/tmp/flipper.log 2>&1 &`, flag, canary, climb))
	waitFor(t, 10e9, "the flipper to run", func() bool {
		code, _, _ := run(t, rt, spec.Name, "pidof", "flipper")
		return code == 0
	})

	var landed []string
	for _, mode := range []string{"openat2", "walk"} {
		prev := inroot.ForceWalk(mode == "walk")
		var pushed, refused, inside, missing int
		for i := range 500 {
			name := fmt.Sprintf("pushed-%s-%s-%d", spec.Name, mode, i)
			err := rt.PushFile(ctx, spec.Name, "/tmp/x/"+name, strings.NewReader(name), 0o644, 0, 0)
			switch {
			case err == nil:
				pushed++
				landed = append(landed, name)
			case errors.Is(err, ErrNotFound):
				refused++
			default:
				t.Errorf("%s: push %s: %v", mode, name, err)
			}
			for _, p := range []string{"/tmp/x/secret", "/tmp/x/pivot", "/tmp/x" + canary + "/secret", "/tmp/x/inside"} {
				rc, _, err := rt.PullFile(ctx, spec.Name, p)
				if err != nil {
					if !errors.Is(err, ErrNotFound) {
						t.Errorf("%s: pull %s: %v", mode, p, err)
					}
					missing++
					continue
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(flag)) {
					inroot.ForceWalk(prev)
					t.Fatalf("%s: pull %s reached the host's canary directory: got %q", mode, p, b)
				}
				if p == "/tmp/x/inside" && string(b) == "inside\n" {
					inside++
				}
			}
		}
		inroot.ForceWalk(prev)
		t.Logf("%s: %d pushes landed, %d refused; %d pulls read the container's file, %d found nothing", mode, pushed, refused, inside, missing)
		if pushed == 0 || refused == 0 || inside == 0 {
			t.Fatalf("%s: the flipper did not race the host (%d pushes landed, %d refused, %d pulls inside)", mode, pushed, refused, inside)
		}
	}
	if code, _, _ := run(t, rt, spec.Name, "pidof", "flipper"); code != 0 {
		log, _ := os.ReadFile(filepath.Join(spec.Rootfs, "tmp/flipper.log"))
		t.Fatalf("the flipper died during the test: %s", log)
	}
	mustRun(t, rt, spec.Name, "killall", "flipper")
	// killall only signals: until the flipper is gone it still swaps the
	// names the checks below read.
	waitFor(t, 10e9, "the flipper to exit", func() bool {
		code, _, _ := run(t, rt, spec.Name, "pidof", "flipper")
		return code != 0
	})

	ents, err := os.ReadDir(canary)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"pivot", "secret"}) {
		t.Errorf("the host's canary directory now holds %v", names)
	}
	if b, _ := os.ReadFile(filepath.Join(canary, "secret")); string(b) != secret {
		t.Errorf("the canary's secret changed: %q", b)
	}
	// The directory ends under one of the four names; a push through a
	// symlink to "/" lands in the container's "/".
	var dir string
	for _, n := range []string{"x", "l1", "l2", "l3"} {
		if fi, err := os.Lstat(filepath.Join(spec.Rootfs, "tmp", n)); err == nil && fi.IsDir() {
			dir = filepath.Join(spec.Rootfs, "tmp", n)
		}
	}
	if dir == "" {
		t.Fatal("the container's directory is gone")
	}
	for _, name := range landed {
		if _, err := os.Lstat(filepath.Join("/", name)); err == nil {
			t.Errorf("push %s landed in the host's /", name)
		}
		if _, err := os.Lstat(filepath.Join(canary, name)); err == nil {
			t.Errorf("push %s landed in the host's canary directory", name)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			b, err = os.ReadFile(filepath.Join(spec.Rootfs, name))
		}
		if err != nil || string(b) != name {
			var where []string
			filepath.WalkDir(spec.Rootfs, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Name() == name {
					where = append(where, p)
				}
				return nil
			})
			t.Errorf("push %s succeeded but is not in the container's %s (%q, %v); found at %v", name, dir, b, err, where)
		}
	}
}

// buildFlipper builds testdata/flipper, statically, to dst.
func buildFlipper(t *testing.T, dst string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(goruntime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			runtimetest.Missing(t, "the go command (to build the test's static helper)")
		}
	}
	cmd := exec.Command(gobin, "build", "-o", dst, "./testdata/flipper")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the flipper: %v\n%s", err, out)
	}
}
