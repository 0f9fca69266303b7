// Command backup measures container backups against a fresh daemon of its
// own (its own state dir, btrfs loop pool and bridge): export and import
// time and tarball bytes of one stopped container (busybox plus -fill MiB
// of data, one snapshot, then -change MiB rewritten), plain and
// --optimized-storage, each beside the floor measured in the same run:
// `tar czf` of the container's rootfs directory and `tar xzf` of that
// tarball into an empty directory. It prints figures; it asserts nothing.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

func main() {
	n := flag.Int("n", 5, "samples per figure (median reported)")
	fill := flag.Int("fill", 64, "MiB of data written into the container (half random, half text)")
	change := flag.Int("change", 8, "MiB rewritten after the snapshot")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := harness.Missing(); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	d := harness.StartDaemon(t, bin)
	d.MustShoal("image", "build", "busybox")
	work, err := os.MkdirTemp("", "shoal-bench-backup-")
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer os.RemoveAll(work)

	c := "bk"
	d.MustShoal("launch", "busybox", c)
	half := *fill / 2
	d.MustShoal("exec", c, "--", "sh", "-c", fmt.Sprintf(
		"mkdir -p /data && head -c %d /dev/urandom > /data/random && yes 'shoal backup benchmark line of text 0123456789' | head -c %d > /data/text", half<<20, (*fill-half)<<20))
	d.MustShoal("snapshot", "create", c, "s1")
	d.MustShoal("exec", c, "--", "sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > /data/changed", *change<<20))
	d.MustShoal("stop", c)
	rootfs := filepath.Join(d.StateDir, "storage-pools", "default", "volumes", "containers%2F"+c)
	if _, err := os.Stat(rootfs); err != nil {
		t.Fatalf("rootfs: %v", err)
	}
	du, _ := exec.Command("du", "-sh", "--apparent-size", rootfs).Output()
	fmt.Printf("# Backups of one stopped busybox container: %d MiB of data (half random, half text), snapshot s1, then %d MiB more (median of %d)\n",
		*fill, *change, *n)
	fmt.Printf("# rootfs (apparent size): %s\n", strings.Fields(string(du))[0])
	fmt.Printf("| figure | export | import | tarball |\n|---|---|---|---|\n")

	type row struct {
		exp, imp []time.Duration
		size     int64
	}
	measure := func(args ...string) row {
		var r row
		file := filepath.Join(work, "b.tar.gz")
		for i := 0; i < *n; i++ {
			os.Remove(file)
			r.exp = append(r.exp, timeIt(func() { d.MustShoal(append([]string{"export", c, file}, args...)...) }))
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatalf("%v", err)
			}
			r.size = fi.Size()
			name := fmt.Sprintf("imp%d", i)
			r.imp = append(r.imp, timeIt(func() { d.MustShoal("import", file, name) }))
			d.MustShoal("delete", "-f", name)
		}
		return r
	}
	print := func(what string, r row) {
		fmt.Printf("| %s | %s | %s | %.1f MiB |\n", what, ms(median(r.exp)), ms(median(r.imp)), float64(r.size)/(1<<20))
	}
	print("shoal export/import, plain (container + s1 trees, gzip)", measure())
	print("shoal export/import --instance-only, plain", measure("--instance-only"))
	print("shoal export/import --optimized-storage (btrfs send s1, then the increment, gzip)", measure("--optimized-storage"))
	print("shoal export/import --optimized-storage --instance-only", measure("--optimized-storage", "--instance-only"))

	// The floor: tar czf of the rootfs directory, tar xzf into an empty one.
	var floor row
	tgz := filepath.Join(work, "floor.tar.gz")
	for i := 0; i < *n; i++ {
		os.Remove(tgz)
		floor.exp = append(floor.exp, timeIt(func() { run(t, "tar", "czf", tgz, "-C", rootfs, ".") }))
		fi, _ := os.Stat(tgz)
		floor.size = fi.Size()
		dst := filepath.Join(work, fmt.Sprintf("x%d", i))
		os.Mkdir(dst, 0o755)
		floor.imp = append(floor.imp, timeIt(func() { run(t, "tar", "xzf", tgz, "-C", dst, "--numeric-owner") }))
		os.RemoveAll(dst)
	}
	print("floor: tar czf / tar xzf of the container's rootfs dir (no snapshot)", floor)
}

func run(t *harness.Program, name string, args ...string) {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}

func timeIt(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration{}, ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
