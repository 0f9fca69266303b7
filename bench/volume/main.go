// Command volume measures the volume stream of a move or copy against the
// raw floor: it fills a btrfs volume (on a loop pool) with incompressible
// data, then times `btrfs send | btrfs receive` between two loop pools and
// Shoal's stream (driver send, 256 KiB parts with a running sha256, the
// receiver's checks, driver receive) between the same pools, in one
// process. It prints MB/s; it asserts nothing. Run as root.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/shoal-dev/shoal/migration"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage/btrfs"
)

func main() {
	sizeMiB := flag.Int("size", 1024, "MiB of data in the volume")
	flag.Parse()
	if err := run(*sizeMiB); err != nil {
		fmt.Fprintln(os.Stderr, "volume bench:", err)
		os.Exit(1)
	}
}

func run(sizeMiB int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "shoal-volbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	poolSize := int64(sizeMiB)*3<<20 + 1<<30
	var mounts []string
	defer func() {
		for _, m := range mounts {
			_ = btrfs.UnmountPool(context.Background(), m)
		}
	}()
	mk := func(name string) (*btrfs.Driver, string, error) {
		mnt := filepath.Join(dir, name)
		if err := btrfs.CreateLoopPool(ctx, filepath.Join(dir, name+".img"), poolSize, mnt); err != nil {
			return nil, "", err
		}
		mounts = append(mounts, mnt)
		d, err := btrfs.New(ctx, btrfs.Config{Path: mnt, DisableQuotas: true})
		return d, mnt, err
	}
	src, _, err := mk("src")
	if err != nil {
		return err
	}
	dstRaw, rawMnt, err := mk("raw")
	if err != nil {
		return err
	}
	dst, _, err := mk("dst")
	if err != nil {
		return err
	}
	_ = dstRaw
	if err := src.CreateVolume(ctx, "containers/c"); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(src.Path("containers/c"), "data"))
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, int64(sizeMiB)<<20); err != nil {
		return err
	}
	f.Close()
	exec.Command("sync").Run()
	if err := src.CreateSnapshot(ctx, "containers/c", "s"); err != nil {
		return err
	}
	fmt.Printf("# volume stream, %d MiB of random data, btrfs loop pool to btrfs loop pool on this machine\n", sizeMiB)

	// Raw floor: btrfs send | btrfs receive. Each measurement starts with
	// the previous one's writes flushed, so neither pays for the other.
	exec.Command("sync").Run()
	start := time.Now()
	send := exec.Command("btrfs", "send", "-q", src.SnapshotPath("containers/c", "s"))
	recv := exec.Command("btrfs", "receive", "-q", rawMnt)
	pipe, err := send.StdoutPipe()
	if err != nil {
		return err
	}
	recv.Stdin = pipe
	if err := recv.Start(); err != nil {
		return err
	}
	if err := send.Run(); err != nil {
		return fmt.Errorf("btrfs send: %w", err)
	}
	if err := recv.Wait(); err != nil {
		return fmt.Errorf("btrfs receive: %w", err)
	}
	raw := time.Since(start)
	// A received volume is only a move's when it is on disk: Shoal's
	// receive ends with a snapshot, whose transaction commit writes the
	// data out. The fair floor includes that flush.
	if out, err := exec.Command("sync", "-f", rawMnt).CombinedOutput(); err != nil {
		return fmt.Errorf("sync: %v: %s", err, out)
	}
	rawDurable := time.Since(start)

	// Shoal's stream.
	exec.Command("sync").Run()
	start = time.Now()
	r, err := migration.NewReceiver(dst, "containers/c", &shoalv1.VolumeHeader{Version: migration.Version, Snapshots: []string{"s"}})
	if err != nil {
		return err
	}
	n, err := migration.SendVolume(ctx, src, "containers/c", []string{"s"}, func(p *shoalv1.VolumePart) error { return r.Apply(ctx, p) })
	if err != nil {
		r.Abort()
		return err
	}
	if _, err := r.Finish(ctx); err != nil {
		return err
	}
	shoal := time.Since(start)

	mb := float64(n) / 1e6
	fmt.Printf("%-52s %8.0f MB/s  (%.2f s)\n", "raw btrfs send | btrfs receive (in page cache)", mb/raw.Seconds(), raw.Seconds())
	fmt.Printf("%-52s %8.0f MB/s  (%.2f s)\n", "raw btrfs send | btrfs receive, then sync -f", mb/rawDurable.Seconds(), rawDurable.Seconds())
	fmt.Printf("%-52s %8.0f MB/s  (%.2f s)\n", "Shoal volume stream (parts + sha256 + checks, on disk)", mb/shoal.Seconds(), shoal.Seconds())
	fmt.Printf("%-52s %8.0f %%\n", "Shoal / raw with sync", 100*rawDurable.Seconds()/shoal.Seconds())
	fmt.Printf("%-52s %8.0f %%\n", "Shoal / raw in page cache", 100*raw.Seconds()/shoal.Seconds())
	return nil
}
