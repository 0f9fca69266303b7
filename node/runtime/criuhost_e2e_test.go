package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/node/runtime/runtimetest"
)

// CRIU starts from its kernel-feature cache after CacheKernelFeatures,
// whether /run is a tmpfs (CRIU keeps the cache itself) or not (Shoal
// mounts one), instead of probing the kernel again on every dump and
// restore. A second call changes nothing.
func TestCRIUKernelFeatureCache(t *testing.T) {
	runtimetest.RequireCRIU(t)
	ctx := context.Background()
	mounted, err := CacheKernelFeatures(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mounted {
		t.Cleanup(func() {
			if err := UncacheKernelFeatures(); err != nil {
				t.Error(err)
			}
		})
	}
	if again, err := CacheKernelFeatures(ctx); err != nil || again {
		t.Fatalf("second call: mounted=%v err=%v, want nothing done", again, err)
	}
	// The first run may write the cache (tmpfs /run); the second loads it.
	for i := 0; i < 2; i++ {
		dir := t.TempDir()
		out, err := exec.Command("criu", "check", "-v4", "-W", dir, "-o", "check.log").CombinedOutput()
		if err != nil {
			t.Fatalf("criu check: %v: %s", err, out)
		}
		log, _ := os.ReadFile(filepath.Join(dir, "check.log"))
		if loaded := strings.Contains(string(log), "Loaded kdat cache from /run/criu.kdat"); i == 1 && !loaded {
			t.Fatalf("criu did not load its kernel-feature cache:\n%.800s", log)
		}
	}
}
