package runtime

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/cluster/pki"
	"github.com/shoal-dev/shoal/migration"
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
			startCounter(t, rt, spec.Name)
			if err := rt.Freeze(ctx, spec.Name); err != nil {
				t.Fatal(err)
			}
			tmp := traversableTempDir(t)
			dir := filepath.Join(tmp, "ckpt")
			if err := rt.Checkpoint(ctx, spec.Name, dir, CheckpointOptions{}); err != nil {
				t.Fatal(err)
			}
			stats, err := migration.ReadDumpStats(dir, false)
			if err != nil || stats.PagesWritten == 0 || stats.PagesLazy != 0 {
				t.Fatalf("dump statistics %+v (%v): want pages written, none lazy", stats, err)
			}
			// No local user but root (and the container's root) reads
			// the memory images.
			ents, _ := os.ReadDir(dir)
			pages := 0
			for _, e := range ents {
				if fi, err := e.Info(); err == nil && IsMemoryImage(e.Name()) {
					pages++
					if fi.Mode().Perm()&0o077 != 0 {
						t.Errorf("memory image %s is mode %v: others can read it", e.Name(), fi.Mode().Perm())
					}
				}
			}
			if pages == 0 {
				t.Error("no memory image (pages-*.img) in the checkpoint")
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

// startCounter starts a counter in a shell variable, written to /tmp/count
// every 50 ms, in its own session (CRIU dumps no session led from
// outside), and waits until it runs.
func startCounter(t *testing.T, rt *Runtime, name string) {
	t.Helper()
	mustRun(t, rt, name, "setsid", "sh", "-c",
		"(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done) </dev/null >/dev/null 2>&1 &")
	waitFor(t, 5*time.Second, "counter", func() bool {
		_, out, _ := run(t, rt, name, "cat", "/tmp/count")
		return atoi(out) >= 3
	})
}

// traversableTempDir returns a test directory the mapped root of an
// unprivileged container can reach (it reads checkpoints there).
func traversableTempDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	for p := tmp; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return tmp
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

// Post-copy: the source dumps without memory and serves the pages; a
// second runtime (another lxcpath, as another host would be) restores at
// once with a lazy-pages daemon pulling them; the counter goes on there,
// the source's dump ends once every page was served, and the daemon exits
// cleanly.
func TestLazyCheckpointRestore(t *testing.T) {
	runtimetest.RequireLazyPages(t, true)
	lazyCheckpointRestore(t, TLSFiles{}, TLSFiles{}, true)
}

// Post-copy's page traffic with TLS, as members set it up: a session made
// for the move (pki.Session). Its client is served; a lazy-pages daemon
// holding a client certificate of the cluster CA (what any cluster client
// has) or another move's session keys is refused — even trusting the
// session's CA itself, so the page server's own check is what refuses —
// and the restore fails instead of running without its memory.
func TestLazyPagesTLS(t *testing.T) {
	runtimetest.RequireLazyPages(t, true)
	s := newSession(t, "move")
	server := sessionFiles(t, s.CAPEM, s.Server)
	t.Run("session", func(t *testing.T) { lazyCheckpointRestore(t, server, sessionFiles(t, s.CAPEM, s.Client), true) })
	t.Run("cluster-client", func(t *testing.T) {
		lazyCheckpointRestore(t, server, sessionFiles(t, s.CAPEM, clusterClient(t)), false)
	})
	t.Run("other-session", func(t *testing.T) {
		lazyCheckpointRestore(t, server, sessionFiles(t, s.CAPEM, newSession(t, "other").Client), false)
	})
}

func newSession(t *testing.T, purpose string) *pki.Session {
	t.Helper()
	s, err := pki.NewSession(purpose, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sessionFiles writes a CA and a key pair as CRIU reads them.
func sessionFiles(t *testing.T, caPEM []byte, pair pki.KeyPairPEM) TLSFiles {
	t.Helper()
	f, err := WriteTLSFiles(filepath.Join(t.TempDir(), "tls"), caPEM, pair.CertPEM, pair.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// clusterClient is a client certificate of a cluster CA, as `shoal remote
// add` gets one.
func clusterClient(t *testing.T) pki.KeyPairPEM {
	t.Helper()
	ca, err := pki.NewCA("a", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, csr, err := pki.NewKeyAndCSR("laptop", pki.RoleClient, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Sign(csr, pki.RoleClient, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.MarshalKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pki.KeyPairPEM{CertPEM: cert, KeyPEM: keyPEM}
}

// lazyCheckpointRestore moves a container by post-copy between two
// runtimes; ok says whether the restore must succeed.
func lazyCheckpointRestore(t *testing.T, srcTLS, dstTLS TLSFiles, ok bool) {
	src := newRuntime(t)
	spec := testContainer(t, src, false, true, nil)
	ctx := context.Background()
	startCounter(t, src, spec.Name)
	if err := src.Freeze(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	tmp := traversableTempDir(t)
	dir := filepath.Join(tmp, "ckpt")
	port := freePort(t)
	dump, err := src.StartLazyCheckpoint(ctx, spec.Name, dir, "127.0.0.1", port, srcTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-dump.Done():
		default:
			dump.Abort()
		}
	})
	b, _ := os.ReadFile(filepath.Join(spec.Rootfs, "tmp", "count"))
	before := atoi(string(b))

	// The "target": the checkpoint copied to another directory.
	dst, err := New(filepath.Join(tmp, "lxc2"), filepath.Join(tmp, "conf2"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := dst.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Undefine(context.Background(), spec.Name) })
	dir2 := filepath.Join(tmp, "ckpt2")
	if out, err := exec.Command("cp", "-a", dir, dir2).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	lazy, err := StartLazyPages(ctx, dir2, "127.0.0.1", port, dstTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-lazy.Done():
		default:
			lazy.Abort()
		}
	})
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() {
		<-lazy.Done() // as the target does: a failed daemon ends the restore
		if lazy.Err() != nil {
			cancel()
		}
	}()
	err = dst.Restore(rctx, spec.Name, dir2, RestoreOptions{LazyPages: true})
	if !ok {
		if err == nil {
			t.Fatal("a lazy-pages daemon from another CA fed the restore")
		}
		if lazy.Err() == nil {
			t.Fatalf("restore failed (%v) but the lazy-pages daemon reports no error", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the counter to go on at the target", func() bool {
		_, out, _ := run(t, dst, spec.Name, "cat", "/tmp/count")
		return atoi(out) > before
	})
	if err := dump.Wait(30 * time.Second); err != nil {
		t.Fatalf("the source's dump: %v", err)
	}
	if stats, err := migration.ReadDumpStats(dir, true); err != nil || stats.PagesLazy == 0 {
		t.Fatalf("dump statistics %+v (%v): want pages served lazily", stats, err)
	}
	select {
	case <-lazy.Done():
		if lazy.Err() != nil {
			t.Fatalf("lazy-pages daemon: %v", lazy.Err())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the lazy-pages daemon still runs after the source's dump ended")
	}
}

// freePort returns a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
