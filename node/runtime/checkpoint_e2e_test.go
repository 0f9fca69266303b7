package runtime

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/runtime/runtimetest"
)

// A process keeping a counter in memory survives a checkpoint (with the
// container left frozen, then stopped) and a restore: it continues from
// where it was instead of starting over, for privileged and unprivileged
// containers alike.
func TestCheckpointRestoreKeepsProcesses(t *testing.T) {
	runtimetest.RequireCRIU(t)
	for _, privileged := range []bool{false, true} {
		t.Run(map[bool]string{false: "unprivileged", true: "privileged"}[privileged], func(t *testing.T) {
			rt := newRuntime(t)
			spec := testContainer(t, rt, privileged, true, nil)
			ctx := context.Background()
			// A counter in a shell variable, written out every 50 ms, in
			// its own session (CRIU dumps no session led from outside).
			mustRun(t, rt, spec.Name, "setsid", "sh", "-c",
				"(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done) </dev/null >/dev/null 2>&1 &")
			waitFor(t, 5*time.Second, "counter", func() bool {
				_, out, _ := run(t, rt, spec.Name, "cat", "/tmp/count")
				return strings.TrimSpace(out) >= "5" && len(strings.TrimSpace(out)) >= 1
			})
			if err := rt.Freeze(ctx, spec.Name); err != nil {
				t.Fatal(err)
			}
			tmp := t.TempDir()
			// The mapped root of an unprivileged container reads the
			// checkpoint: the path must be traversable.
			for p := tmp; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
				if err := os.Chmod(p, 0o711); err != nil {
					t.Fatal(err)
				}
			}
			dir := filepath.Join(tmp, "ckpt")
			if err := rt.Checkpoint(ctx, spec.Name, dir, CheckpointOptions{}); err != nil {
				t.Fatal(err)
			}
			st, err := rt.State(ctx, spec.Name)
			if err != nil {
				t.Fatal(err)
			}
			if st.Status != StatusFrozen {
				t.Fatalf("after a dump of a frozen container its state is %s, want %s", st.Status, StatusFrozen)
			}
			// The rootfs shows the last value written before the freeze.
			b, err := os.ReadFile(filepath.Join(spec.Rootfs, "tmp", "count"))
			if err != nil {
				t.Fatal(err)
			}
			before := string(b)
			if err := rt.Stop(ctx, spec.Name, 0); err != nil {
				t.Fatal(err)
			}
			if err := rt.Restore(ctx, spec.Name, dir, RestoreOptions{}); err != nil {
				if b, rerr := os.ReadFile(filepath.Join(dir, "restore.log")); rerr == nil && os.Getenv("SHOAL_TEST_CRIU_LOG") != "" {
					t.Log(string(b))
				}
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "counter to go on", func() bool {
				_, out, _ := run(t, rt, spec.Name, "cat", "/tmp/count")
				return atoi(out) > atoi(before)
			})
			after := atoi(mustRun(t, rt, spec.Name, "cat", "/tmp/count"))
			if after < atoi(before) {
				t.Fatalf("counter restarted: %d before the checkpoint, %d after", atoi(before), after)
			}
		})
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range strings.TrimSpace(s) {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}
