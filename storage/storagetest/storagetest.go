package storagetest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/shoal-dev/shoal/storage"
)

// bigSize is the random payload of populated volumes: large enough that a
// full send dwarfs an incremental one.
const bigSize = 1 << 20

// Run runs the conformance suite. newDriver returns a driver on a fresh,
// empty pool each time it is called (some tests use two, as sender and
// receiver) and arranges its cleanup with t.Cleanup.
func Run(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	tests := []struct {
		name string
		fn   func(t *testing.T, newDriver func(t *testing.T) storage.Driver)
	}{
		{"Info", testInfo},
		{"InvalidNames", testInvalidNames},
		{"CreateListExists", testCreateListExists},
		{"NotFound", testNotFound},
		{"Clone", testClone},
		{"Snapshots", testSnapshots},
		{"Restore", testRestore},
		{"DeleteVolumeRemovesSnapshots", testDeleteVolume},
		{"SpecialFiles", testSpecialFiles},
		{"SendReceive", testSendReceive},
		{"SendReceiveIncremental", testSendReceiveIncremental},
		{"Rename", testRename},
		{"RenameSnapshot", testRenameSnapshot},
		{"IncrementalBackAfterRenames", testIncrementalBack},
		{"Usage", testUsage},
		{"Quota", testQuota},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newDriver) })
	}
}

func ok(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// listResult carries a list call's two results into wantList.
type listResult struct {
	got []string
	err error
}

func res(got []string, err error) listResult { return listResult{got, err} }

func wantList(t testing.TB, r listResult, want ...string) {
	t.Helper()
	ok(t, r.err)
	got := r.got
	if want == nil {
		want = []string{}
	}
	if got == nil || !slices.Equal(got, want) {
		t.Fatalf("got list %q, want %q", got, want)
	}
}

func testInfo(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	d := newDriver(t)
	if d.Info().Name == "" {
		t.Fatal("Info().Name is empty")
	}
}

func testInvalidNames(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "good/v"))
	for _, name := range []string{"", "/abs", "a/", "a//b", "..", "a/../b", "./a", ".", "a b", "a\x00b", "a\\b", "a%2Fb"} {
		wantErr(t, d.CreateVolume(ctx, name), storage.ErrInvalidName, "CreateVolume("+name+")")
		wantErr(t, d.CloneVolume(ctx, "good/v", name), storage.ErrInvalidName, "CloneVolume(good/v, "+name+")")
		if p := d.Path(name); p != "" {
			t.Errorf("Path(%q) = %q, want \"\"", name, p)
		}
		_, err := d.VolumeExists(ctx, name)
		wantErr(t, err, storage.ErrInvalidName, "VolumeExists("+name+")")
	}
	for _, snap := range []string{"", "a/b", "..", ".hidden", "/s"} {
		wantErr(t, d.CreateSnapshot(ctx, "good/v", snap), storage.ErrInvalidName, "CreateSnapshot("+snap+")")
		if p := d.SnapshotPath("good/v", snap); p != "" {
			t.Errorf("SnapshotPath(good/v, %q) = %q, want \"\"", snap, p)
		}
	}
	wantList(t, res(d.ListVolumes(ctx, "")), "good/v")
}

func testCreateListExists(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	wantList(t, res(d.ListVolumes(ctx, "")))
	for _, v := range []string{"containers/c2", "containers/c1", "images/0123abcd", "custom/a/b"} {
		ok(t, d.CreateVolume(ctx, v))
	}
	wantErr(t, d.CreateVolume(ctx, "containers/c1"), storage.ErrExists, "CreateVolume twice")
	wantList(t, res(d.ListVolumes(ctx, "containers/")), "containers/c1", "containers/c2")
	wantList(t, res(d.ListVolumes(ctx, "")), "containers/c1", "containers/c2", "custom/a/b", "images/0123abcd")
	wantList(t, res(d.ListVolumes(ctx, "nothing/")))

	exists, err := d.VolumeExists(ctx, "containers/c1")
	ok(t, err)
	missing, err := d.VolumeExists(ctx, "containers/c3")
	ok(t, err)
	if !exists || missing {
		t.Fatalf("VolumeExists: c1 %v (want true), c3 %v (want false)", exists, missing)
	}
	p := d.Path("containers/c1")
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		t.Fatalf("Path(containers/c1) = %s is not a directory: %v", p, err)
	}
	if ents, err := os.ReadDir(p); err != nil || len(ents) != 0 {
		t.Fatalf("new volume is not empty: %v %v", ents, err)
	}
	if d.Path("containers/c1") == d.Path("containers/c2") {
		t.Fatal("two volumes share a path")
	}
	ok(t, os.WriteFile(filepath.Join(p, "x"), []byte("x"), 0o644))
	ok(t, d.DeleteVolume(ctx, "containers/c1"))
	wantList(t, res(d.ListVolumes(ctx, "containers/")), "containers/c2")
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted volume's path still exists: %v", err)
	}
	ok(t, d.CreateVolume(ctx, "containers/c1"))
	if ents, _ := os.ReadDir(p); len(ents) != 0 {
		t.Fatal("re-created volume is not empty")
	}
	ok(t, d.Close())
}

func testNotFound(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	nf := storage.ErrNotFound
	wantErr(t, d.CloneVolume(ctx, "missing", "x"), nf, "CloneVolume of missing")
	wantErr(t, d.CloneSnapshot(ctx, "v", "missing", "x"), nf, "CloneSnapshot of missing snapshot")
	wantErr(t, d.CloneSnapshot(ctx, "missing", "s", "x"), nf, "CloneSnapshot of missing volume")
	wantErr(t, d.DeleteVolume(ctx, "missing"), nf, "DeleteVolume of missing")
	wantErr(t, d.CreateSnapshot(ctx, "missing", "s"), nf, "CreateSnapshot of missing volume")
	wantErr(t, d.DeleteSnapshot(ctx, "v", "missing"), nf, "DeleteSnapshot of missing")
	wantErr(t, d.DeleteSnapshot(ctx, "missing", "s"), nf, "DeleteSnapshot of missing volume")
	wantErr(t, d.RestoreSnapshot(ctx, "v", "missing"), nf, "RestoreSnapshot of missing")
	wantErr(t, d.RenameVolume(ctx, "missing", "x"), nf, "RenameVolume of missing")
	_, err := d.ListSnapshots(ctx, "missing")
	wantErr(t, err, nf, "ListSnapshots of missing volume")
	_, err = d.Usage(ctx, "missing")
	wantErr(t, err, nf, "Usage of missing volume")
	var buf bytes.Buffer
	wantErr(t, d.Send(ctx, "v", "missing", "", &buf), nf, "Send of missing snapshot")
	wantErr(t, d.Send(ctx, "v", "s", "missing", &buf), nf, "Send with missing parent")
	if _, err := d.VolumeExists(ctx, "missing"); err != nil {
		t.Fatalf("VolumeExists of missing: %v", err)
	}
}

func testClone(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "images/base"))
	populate(t, d.Path("images/base"), 4096)
	ok(t, d.CloneVolume(ctx, "images/base", "containers/c1"))
	sameTree(t, "clone", d.Path("containers/c1"), d.Path("images/base"))
	checkSpecial(t, d.Path("containers/c1"))
	wantErr(t, d.CloneVolume(ctx, "images/base", "containers/c1"), storage.ErrExists, "CloneVolume onto existing")

	// The clone is writable and independent of its source, both ways.
	ok(t, os.WriteFile(filepath.Join(d.Path("containers/c1"), "file"), []byte("changed"), 0o644))
	ok(t, os.Remove(filepath.Join(d.Path("images/base"), "hl1")))
	if b, _ := os.ReadFile(filepath.Join(d.Path("images/base"), "file")); string(b) != "hello\n" {
		t.Fatalf("writing the clone changed the source: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(d.Path("containers/c1"), "hl1")); err != nil {
		t.Fatalf("removing from the source changed the clone: %v", err)
	}

	ok(t, d.CreateSnapshot(ctx, "images/base", "s1"))
	ok(t, d.CloneSnapshot(ctx, "images/base", "s1", "containers/c2"))
	sameTree(t, "snapshot clone", d.Path("containers/c2"), d.SnapshotPath("images/base", "s1"))
	wantErr(t, d.CloneSnapshot(ctx, "images/base", "s1", "containers/c2"), storage.ErrExists, "CloneSnapshot onto existing")
	ok(t, os.WriteFile(filepath.Join(d.Path("containers/c2"), "new"), []byte("new"), 0o644))
	if _, err := os.Lstat(filepath.Join(d.SnapshotPath("images/base", "s1"), "new")); err == nil {
		t.Fatal("writing a snapshot's clone changed the snapshot")
	}
	wantList(t, res(d.ListVolumes(ctx, "containers/")), "containers/c1", "containers/c2")
	// Clones have no snapshots of their own.
	wantList(t, res(d.ListSnapshots(ctx, "containers/c2")))
}

func testSnapshots(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	wantList(t, res(d.ListSnapshots(ctx, "v")))
	p := d.Path("v")
	// Names chosen so that creation order is not name order.
	order := []string{"zeta", "alpha", "mid", "beta"}
	for i, s := range order {
		ok(t, os.WriteFile(filepath.Join(p, "gen"), []byte{byte('0' + i)}, 0o644))
		ok(t, d.CreateSnapshot(ctx, "v", s))
	}
	wantErr(t, d.CreateSnapshot(ctx, "v", "alpha"), storage.ErrExists, "CreateSnapshot twice")
	wantList(t, res(d.ListSnapshots(ctx, "v")), order...)
	for i, s := range order {
		b, err := os.ReadFile(filepath.Join(d.SnapshotPath("v", s), "gen"))
		ok(t, err)
		if string(b) != string([]byte{byte('0' + i)}) {
			t.Fatalf("snapshot %s holds gen %q, want %d", s, b, i)
		}
	}
	ok(t, os.WriteFile(filepath.Join(p, "after"), nil, 0o644))
	if _, err := os.Lstat(filepath.Join(d.SnapshotPath("v", "beta"), "after")); err == nil {
		t.Fatal("a file written after the snapshot shows in it")
	}
	ok(t, d.DeleteSnapshot(ctx, "v", "alpha"))
	wantList(t, res(d.ListSnapshots(ctx, "v")), "zeta", "mid", "beta")
	ok(t, d.CreateSnapshot(ctx, "v", "alpha"))
	wantList(t, res(d.ListSnapshots(ctx, "v")), "zeta", "mid", "beta", "alpha")
	if d.SnapshotPath("v", "zeta") == d.Path("v") {
		t.Fatal("snapshot path equals volume path")
	}
	// Snapshots of another volume are separate, even with a prefix name.
	ok(t, d.CreateVolume(ctx, "v/sub"))
	wantList(t, res(d.ListSnapshots(ctx, "v/sub")))
	ok(t, d.CreateSnapshot(ctx, "v/sub", "zeta"))
	wantList(t, res(d.ListSnapshots(ctx, "v")), "zeta", "mid", "beta", "alpha")
}

func testRestore(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "containers/c1"))
	p := d.Path("containers/c1")
	populate(t, p, 4096)
	ok(t, d.CreateSnapshot(ctx, "containers/c1", "s1"))
	ok(t, os.WriteFile(filepath.Join(p, "file"), []byte("changed"), 0o644))
	ok(t, os.WriteFile(filepath.Join(p, "added"), []byte("added"), 0o644))
	ok(t, os.Remove(filepath.Join(p, "suid")))
	ok(t, d.CreateSnapshot(ctx, "containers/c1", "s2"))

	ok(t, d.RestoreSnapshot(ctx, "containers/c1", "s1"))
	if d.Path("containers/c1") != p {
		t.Fatalf("Path changed across restore: %s → %s", p, d.Path("containers/c1"))
	}
	sameTree(t, "restore s1", p, d.SnapshotPath("containers/c1", "s1"))
	checkSpecial(t, p)
	wantList(t, res(d.ListSnapshots(ctx, "containers/c1")), "s1", "s2")

	// The restored volume is writable and the snapshot stays as it was.
	ok(t, os.WriteFile(filepath.Join(p, "file"), []byte("again"), 0o644))
	if b, _ := os.ReadFile(filepath.Join(d.SnapshotPath("containers/c1", "s1"), "file")); string(b) != "hello\n" {
		t.Fatalf("writing the restored volume changed the snapshot: %q", b)
	}
	ok(t, d.RestoreSnapshot(ctx, "containers/c1", "s2"))
	sameTree(t, "restore s2", p, d.SnapshotPath("containers/c1", "s2"))
	wantList(t, res(d.ListVolumes(ctx, "")), "containers/c1")
}

func testDeleteVolume(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	ok(t, d.CreateVolume(ctx, "v2"))
	ok(t, os.WriteFile(filepath.Join(d.Path("v"), "f"), []byte("x"), 0o644))
	ok(t, d.CreateSnapshot(ctx, "v", "s1"))
	ok(t, d.CreateSnapshot(ctx, "v", "s2"))
	ok(t, d.CreateSnapshot(ctx, "v2", "s1"))
	ok(t, d.CloneSnapshot(ctx, "v", "s1", "c"))
	sp := d.SnapshotPath("v", "s1")

	ok(t, d.DeleteVolume(ctx, "v"))
	if _, err := os.Lstat(sp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot path %s survived DeleteVolume: %v", sp, err)
	}
	wantErr(t, d.DeleteVolume(ctx, "v"), storage.ErrNotFound, "DeleteVolume twice")
	wantList(t, res(d.ListVolumes(ctx, "")), "c", "v2")
	wantList(t, res(d.ListSnapshots(ctx, "v2")), "s1")
	// A clone outlives the volume it came from.
	if b, err := os.ReadFile(filepath.Join(d.Path("c"), "f")); err != nil || string(b) != "x" {
		t.Fatalf("clone lost content: %q %v", b, err)
	}
	// A new volume of the same name starts with no snapshots.
	ok(t, d.CreateVolume(ctx, "v"))
	wantList(t, res(d.ListSnapshots(ctx, "v")))
	ok(t, d.CreateSnapshot(ctx, "v", "s1"))
}

func testSpecialFiles(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	populate(t, d.Path("v"), 0)
	checkSpecial(t, d.Path("v"))
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	sameTree(t, "snapshot", d.SnapshotPath("v", "s"), d.Path("v"))
	checkSpecial(t, d.SnapshotPath("v", "s"))
	ok(t, d.CloneVolume(ctx, "v", "clone"))
	checkSpecial(t, d.Path("clone"))

	var stream bytes.Buffer
	ok(t, d.Send(ctx, "v", "s", "", &stream))
	other := newDriver(t)
	ok(t, other.Receive(ctx, "v", "s", &stream))
	sameTree(t, "received volume", other.Path("v"), d.Path("v"))
	sameTree(t, "received snapshot", other.SnapshotPath("v", "s"), d.SnapshotPath("v", "s"))
	checkSpecial(t, other.Path("v"))
}

func testSendReceive(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	src, dst := newDriver(t), newDriver(t)
	ok(t, src.CreateVolume(ctx, "containers/c1"))
	populate(t, src.Path("containers/c1"), 64<<10)
	ok(t, src.CreateSnapshot(ctx, "containers/c1", "s1"))
	var stream bytes.Buffer
	ok(t, src.Send(ctx, "containers/c1", "s1", "", &stream))
	data := stream.Bytes()

	ok(t, dst.Receive(ctx, "containers/c1", "s1", bytes.NewReader(data)))
	wantList(t, res(dst.ListVolumes(ctx, "")), "containers/c1")
	wantList(t, res(dst.ListSnapshots(ctx, "containers/c1")), "s1")
	sameTree(t, "received", dst.Path("containers/c1"), src.SnapshotPath("containers/c1", "s1"))
	wantErr(t, dst.Receive(ctx, "containers/c1", "s1", bytes.NewReader(data)), storage.ErrExists, "Receive of an existing snapshot")

	// The received volume is writable and independent of the snapshot.
	ok(t, os.WriteFile(filepath.Join(dst.Path("containers/c1"), "file"), []byte("mine"), 0o644))
	if b, _ := os.ReadFile(filepath.Join(dst.SnapshotPath("containers/c1", "s1"), "file")); string(b) != "hello\n" {
		t.Fatalf("received snapshot changed with its volume: %q", b)
	}

	// The same stream into the same pool under another name (a copy).
	ok(t, dst.Receive(ctx, "backup/c1", "s1", bytes.NewReader(data)))
	sameTree(t, "received copy", dst.Path("backup/c1"), src.SnapshotPath("containers/c1", "s1"))

	// A truncated stream fails and leaves nothing behind.
	err := dst.Receive(ctx, "broken", "s1", bytes.NewReader(data[:len(data)/2]))
	if err == nil {
		t.Fatal("Receive of a truncated stream succeeded")
	}
	if ok2, _ := dst.VolumeExists(ctx, "broken"); ok2 {
		t.Fatal("failed Receive left a volume behind")
	}
	wantList(t, res(dst.ListVolumes(ctx, "")), "backup/c1", "containers/c1")
}

func testSendReceiveIncremental(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	src, dst := newDriver(t), newDriver(t)
	const vol = "containers/c1"
	ok(t, src.CreateVolume(ctx, vol))
	p := src.Path(vol)
	populate(t, p, bigSize)
	ok(t, src.CreateSnapshot(ctx, vol, "s1"))
	var full bytes.Buffer
	ok(t, src.Send(ctx, vol, "s1", "", &full))
	fullSize := full.Len()
	ok(t, dst.Receive(ctx, vol, "s1", &full))

	// Change a little: add, modify, delete, rename, relink, chown, chmod.
	ok(t, os.WriteFile(filepath.Join(p, "added"), []byte("added\n"), 0o600))
	ok(t, os.WriteFile(filepath.Join(p, "file"), []byte("modified\n"), 0o644))
	ok(t, os.Remove(filepath.Join(p, "dir", "hl2")))
	ok(t, os.Rename(filepath.Join(p, "dir", "nested"), filepath.Join(p, "moved")))
	ok(t, os.Link(filepath.Join(p, "added"), filepath.Join(p, "dir", "added-link")))
	ok(t, os.Lchown(filepath.Join(p, "hl1"), shiftedID+5, shiftedID+5))
	ok(t, os.Chmod(filepath.Join(p, "dir"), 0o700))
	ok(t, d2(os.Create(filepath.Join(p, "dir", "empty"))))
	ok(t, src.CreateSnapshot(ctx, vol, "s2"))
	var inc bytes.Buffer
	ok(t, src.Send(ctx, vol, "s2", "s1", &inc))
	incSize := inc.Len()
	t.Logf("%s: full stream %d bytes, incremental %d bytes", src.Info().Name, fullSize, incSize)
	if src.Info().OptimizedSend && incSize >= fullSize/4 {
		t.Fatalf("incremental stream is %d bytes, full is %d: want far smaller", incSize, fullSize)
	}
	ok(t, dst.Receive(ctx, vol, "s2", &inc))
	wantList(t, res(dst.ListSnapshots(ctx, vol)), "s1", "s2")
	sameTree(t, "incremental volume", dst.Path(vol), src.SnapshotPath(vol, "s2"))
	sameTree(t, "incremental snapshot", dst.SnapshotPath(vol, "s2"), src.SnapshotPath(vol, "s2"))
	sameTree(t, "parent snapshot", dst.SnapshotPath(vol, "s1"), src.SnapshotPath(vol, "s1"))

	// The receiver's volume was written to; a further receive overwrites it.
	ok(t, os.WriteFile(filepath.Join(dst.Path(vol), "local"), nil, 0o644))
	ok(t, os.WriteFile(filepath.Join(p, "third"), []byte("3"), 0o644))
	ok(t, src.CreateSnapshot(ctx, vol, "s3"))
	var inc2 bytes.Buffer
	ok(t, src.Send(ctx, vol, "s3", "s2", &inc2))
	ok(t, dst.Receive(ctx, vol, "s3", &inc2))
	sameTree(t, "second incremental", dst.Path(vol), src.SnapshotPath(vol, "s3"))
	wantList(t, res(dst.ListSnapshots(ctx, vol)), "s1", "s2", "s3")

	// And it can send back what it received.
	var back bytes.Buffer
	ok(t, dst.Send(ctx, vol, "s3", "s2", &back))
}

// d2 closes a freshly created file, keeping the error.
func d2(f *os.File, err error) error {
	if err != nil {
		return err
	}
	return f.Close()
}

func testUsage(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	before, err := d.Usage(ctx, "v")
	ok(t, err)
	writeRandom(t, filepath.Join(d.Path("v"), "data"), 4<<20)
	after, err := d.Usage(ctx, "v")
	ok(t, err)
	if after < before+4<<20 || after > before+8<<20 {
		t.Fatalf("Usage after writing 4 MiB: %d (before %d)", after, before)
	}
}

func testQuota(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	if !d.Info().Quotas {
		wantErr(t, d.SetQuota(ctx, "v", 1<<20), storage.ErrNotSupported, "SetQuota without quotas")
		return
	}
	wantErr(t, d.SetQuota(ctx, "missing", 1<<20), storage.ErrNotFound, "SetQuota of missing volume")
	ok(t, d.SetQuota(ctx, "v", 2<<20))
	if err := writeSynced(filepath.Join(d.Path("v"), "big"), 8<<20); err == nil {
		t.Fatal("writing 8 MiB into a 2 MiB quota succeeded")
	}
	ok(t, os.Remove(filepath.Join(d.Path("v"), "big")))
	// The limit survives a restore.
	ok(t, d.CreateSnapshot(ctx, "v", "s"))
	ok(t, d.RestoreSnapshot(ctx, "v", "s"))
	if err := writeSynced(filepath.Join(d.Path("v"), "big"), 8<<20); err == nil {
		t.Fatal("after restore, writing 8 MiB into a 2 MiB quota succeeded")
	}
	ok(t, os.Remove(filepath.Join(d.Path("v"), "big")))
	ok(t, d.SetQuota(ctx, "v", 0))
	ok(t, writeSynced(filepath.Join(d.Path("v"), "big"), 8<<20))
}

// writeSynced writes size bytes to p and fsyncs, returning the first error.
func writeSynced(p string, size int) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for written := 0; written < size && err == nil; written += len(buf) {
		_, err = f.Write(buf)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func testRename(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	const from, to = "containers/c1", "replicas/c1"
	ok(t, d.CreateVolume(ctx, from))
	populate(t, d.Path(from), 4096)
	ok(t, d.CreateSnapshot(ctx, from, "zeta"))
	ok(t, os.WriteFile(filepath.Join(d.Path(from), "later"), []byte("later\n"), 0o644))
	ok(t, d.CreateSnapshot(ctx, from, "alpha"))
	ok(t, d.CreateVolume(ctx, "other"))
	wantErr(t, d.RenameVolume(ctx, from, "other"), storage.ErrExists, "RenameVolume onto an existing volume")
	wantErr(t, d.RenameVolume(ctx, from, "bad name"), storage.ErrInvalidName, "RenameVolume to a bad name")

	ok(t, d.RenameVolume(ctx, from, to))
	if there, err := d.VolumeExists(ctx, from); err != nil || there {
		t.Fatalf("after the rename, %s exists: %v %v", from, there, err)
	}
	wantList(t, res(d.ListVolumes(ctx, "containers/")))
	wantList(t, res(d.ListVolumes(ctx, "replicas/")), to)
	checkSpecial(t, d.Path(to))
	if b, err := os.ReadFile(filepath.Join(d.Path(to), "later")); err != nil || string(b) != "later\n" {
		t.Fatalf("the renamed volume's file: %q %v", b, err)
	}
	// The snapshots came along, in their order, with their content.
	wantList(t, res(d.ListSnapshots(ctx, to)), "zeta", "alpha")
	if _, err := os.Lstat(filepath.Join(d.SnapshotPath(to, "zeta"), "later")); err == nil {
		t.Fatal("snapshot zeta has a file written after it was taken")
	}
	// The old name is free again and starts empty.
	ok(t, d.CreateVolume(ctx, from))
	wantList(t, res(d.ListSnapshots(ctx, from)))
	ok(t, d.DeleteVolume(ctx, to))
	wantList(t, res(d.ListVolumes(ctx, "replicas/")))
}

// testIncrementalBack is a failover and a return as HA does them: a volume
// sent to another pool under a second name is renamed there to the first
// name (promoted) and changed; the sender renames its own copy to the
// second name (demoted), and an increment on their common snapshot, sent
// back, applies to it.
func testIncrementalBack(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	a, b := newDriver(t), newDriver(t)
	const vol, rep = "containers/c1", "replicas/c1"
	ok(t, a.CreateVolume(ctx, vol))
	populate(t, a.Path(vol), bigSize)
	ok(t, a.CreateSnapshot(ctx, vol, "s1"))
	var full bytes.Buffer
	ok(t, a.Send(ctx, vol, "s1", "", &full))
	fullSize := full.Len()
	ok(t, b.Receive(ctx, rep, "s1", &full))

	ok(t, b.RenameVolume(ctx, rep, vol))
	ok(t, os.WriteFile(filepath.Join(b.Path(vol), "after"), []byte("after the failover\n"), 0o644))
	ok(t, b.CreateSnapshot(ctx, vol, "s2"))
	ok(t, os.WriteFile(filepath.Join(a.Path(vol), "stale"), []byte("written before the old owner died\n"), 0o644))
	ok(t, a.RenameVolume(ctx, vol, rep))

	var inc bytes.Buffer
	ok(t, b.Send(ctx, vol, "s2", "s1", &inc))
	t.Logf("%s: full stream %d bytes, the increment back %d bytes", a.Info().Name, fullSize, inc.Len())
	if a.Info().OptimizedSend && inc.Len() >= fullSize/4 {
		t.Fatalf("the increment back is %d bytes, the full stream %d: want far smaller", inc.Len(), fullSize)
	}
	ok(t, a.Receive(ctx, rep, "s2", &inc))
	sameTree(t, "the demoted copy after the increment", a.Path(rep), b.SnapshotPath(vol, "s2"))
	wantList(t, res(a.ListSnapshots(ctx, rep)), "s1", "s2")
}

// testRenameSnapshot: a driver with the SnapshotRenamer ability keeps the
// renamed snapshot's content and place; the others say ErrNotSupported.
func testRenameSnapshot(t *testing.T, newDriver func(t *testing.T) storage.Driver) {
	ctx := context.Background()
	d := newDriver(t)
	ok(t, d.CreateVolume(ctx, "v"))
	p := d.Path("v")
	for i, s := range []string{"zeta", "alpha", "mid"} {
		ok(t, os.WriteFile(filepath.Join(p, "gen"), []byte{byte('0' + i)}, 0o644))
		ok(t, d.CreateSnapshot(ctx, "v", s))
	}
	if _, can := d.(storage.SnapshotRenamer); !can {
		wantErr(t, storage.RenameSnapshot(ctx, d, "v", "alpha", "first"), storage.ErrNotSupported, "RenameSnapshot without the ability")
		return
	}
	ok(t, storage.RenameSnapshot(ctx, d, "v", "alpha", "first"))
	wantList(t, res(d.ListSnapshots(ctx, "v")), "zeta", "first", "mid")
	b, err := os.ReadFile(filepath.Join(d.SnapshotPath("v", "first"), "gen"))
	ok(t, err)
	if string(b) != "1" {
		t.Fatalf("renamed snapshot holds gen %q, want 1", b)
	}
	wantErr(t, storage.RenameSnapshot(ctx, d, "v", "alpha", "x"), storage.ErrNotFound, "rename of a missing snapshot")
	wantErr(t, storage.RenameSnapshot(ctx, d, "v", "zeta", "mid"), storage.ErrExists, "rename onto a snapshot")
	wantErr(t, storage.RenameSnapshot(ctx, d, "v", "zeta", "a/b"), storage.ErrInvalidName, "rename to a bad name")
	// Still a snapshot the volume can be restored to.
	ok(t, d.RestoreSnapshot(ctx, "v", "first"))
	b, err = os.ReadFile(filepath.Join(p, "gen"))
	ok(t, err)
	if string(b) != "1" {
		t.Fatalf("restored from the renamed snapshot: gen %q, want 1", b)
	}
}
