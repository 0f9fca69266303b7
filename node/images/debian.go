package images

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DebianOptions configure BuildDebian.
type DebianOptions struct {
	// Suite is the Debian release: "bookworm" or "trixie".
	Suite string
	// Mirror is the Debian archive; DefaultDebianMirror when empty.
	Mirror string
	// CacheDir holds finished images, one <suite>.tar.gz per suite (a unified
	// image tarball, importable as is). Empty disables the cache;
	// DefaultDebianCacheDir is the daemon's usual choice.
	CacheDir string
}

// Defaults for DebianOptions.
const (
	DefaultDebianMirror   = "http://deb.debian.org/debian"
	DefaultDebianCacheDir = "/var/cache/shoal/debian"
)

// DebianSuites are the suites BuildDebian accepts.
var DebianSuites = []string{"bookworm", "trixie"}

// debianRecipe versions what BuildDebian does to a rootfs. Bump it whenever
// the package list or the customisation changes: cached images built by an
// older recipe are then rebuilt.
const debianRecipe = "1"

// debianPackages are installed on top of minbase. ifupdown and
// isc-dhcp-client (still in trixie: 4.4.3-P1-8) bring up eth0 with DHCP as
// root: a privileged container here cannot run tasks as other users under
// CRIU, which rules out systemd-networkd (see DESIGN.md).
var debianPackages = []string{
	"systemd-sysv", "ifupdown", "isc-dhcp-client", "iproute2", "netbase", "iputils-ping", "procps",
}

// debianMasked are units masked in the image: ttys (containers have none:
// lxc.tty.max = 0), debugfs (not mountable in a container), and units that
// only wait.
var debianMasked = []string{
	"sys-kernel-debug.mount",
	"getty@.service", "serial-getty@.service", "console-getty.service",
	"container-getty@.service", "getty-static.service",
	"systemd-networkd-wait-online.service",
}

// criuDropIn turns off BPF IP filtering and accounting for every service:
// PID 1 would hold bpf-prog fds, which CRIU cannot dump.
const criuDropIn = `# Shoal: CRIU cannot checkpoint the bpf-prog fds systemd holds for IP
# filtering and accounting, so they are off for every service.
[Service]
IPAddressDeny=
IPAddressAllow=
IPAccounting=no
`

// debianInterfaces configures eth0 with DHCP through ifupdown.
const debianInterfaces = `# Shoal: the container's NIC is eth0, configured by DHCP.
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
`

// BuildDebian builds a Debian system container root filesystem in dst, an
// existing empty directory, and returns its metadata.
//
// A fresh build runs debootstrap (minbase, plus systemd-sysv, ifupdown,
// isc-dhcp-client and a few tools) against opts.Mirror, then prepares the
// rootfs for LXC and CRIU: eth0 by DHCP in /etc/network/interfaces, gettys
// and debugfs masked, a service.d drop-in disabling BPF IP filtering, an
// empty /etc/machine-id (systemd makes one at boot), the placeholder
// hostname "debian" (the runtime writes the container's name), empty
// /etc/resolv.conf, and no apt caches or package lists (run apt-get update
// first). With a CacheDir the result is kept as <CacheDir>/<suite>.tar.gz and
// later builds unpack it. A failed build leaves no cache file and an empty
// dst. Progress, when not nil, receives debootstrap's steps ("download",
// "extract", "unpack", "configure", counted per package) and "pack" or
// "unpack-cache".
func BuildDebian(ctx context.Context, opts DebianOptions, dst string, p Progress) (md Metadata, err error) {
	if !validSuite(opts.Suite) {
		return Metadata{}, fmt.Errorf("build debian: %w: suite %q (allowed: %s)", ErrInvalid, opts.Suite, strings.Join(DebianSuites, ", "))
	}
	if opts.Mirror == "" {
		opts.Mirror = DefaultDebianMirror
	}
	if p == nil {
		p = func(string, int64, int64) {}
	}
	log := logger().With("suite", opts.Suite, "dst", dst)
	if opts.CacheDir != "" {
		cache := filepath.Join(opts.CacheDir, opts.Suite+".tar.gz")
		md, err := unpackCache(ctx, cache, dst, p)
		if err == nil {
			log.Info("debian image from cache", "cache", cache)
			return md, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("debian cache unusable, rebuilding", "cache", cache, "err", err)
		}
		if err := emptyDir(dst); err != nil {
			return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
		}
	}
	defer func() {
		if err != nil {
			if cerr := emptyDir(dst); cerr != nil {
				log.Error("cannot clean failed build", "err", cerr)
			}
		}
	}()
	start := time.Now()
	debs := "" // downloaded packages, kept for a retry
	if opts.CacheDir != "" {
		if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
			return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
		}
		if debs, err = os.MkdirTemp(opts.CacheDir, ".debs-"+opts.Suite+"-"); err != nil {
			return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
		}
		defer os.RemoveAll(debs)
	}
	for attempt := 1; ; attempt++ {
		err := debootstrap(ctx, opts, dst, debs, p)
		if err == nil {
			break
		}
		if attempt == debootstrapAttempts || ctx.Err() != nil {
			return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
		}
		log.Warn("debootstrap failed, retrying", "attempt", attempt, "err", err)
		if err := emptyDir(dst); err != nil {
			return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
		}
	}
	log.Info("debootstrap done", "took", time.Since(start).Round(time.Millisecond))
	if err := customizeDebian(dst); err != nil {
		return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
	}
	if _, err := os.Readlink(filepath.Join(dst, "sbin/init")); err != nil {
		return Metadata{}, fmt.Errorf("build debian %s: no /sbin/init (systemd-sysv): %w", opts.Suite, err)
	}
	now := time.Now()
	md = Metadata{
		Architecture: kernelArch(hostDpkgArch()),
		CreationDate: now.Unix(),
		Properties: map[string]string{
			"os":           "debian",
			"release":      opts.Suite,
			"description":  "Debian " + opts.Suite + " (minbase, systemd)",
			"variant":      "default",
			"serial":       now.UTC().Format("20060102_1504"),
			"shoal.recipe": debianRecipe,
		},
	}
	if opts.CacheDir != "" {
		p("pack", 0, -1)
		if err := writeCache(ctx, dst, md, filepath.Join(opts.CacheDir, opts.Suite+".tar.gz")); err != nil {
			return Metadata{}, fmt.Errorf("build debian %s: %w", opts.Suite, err)
		}
		p("pack", 1, 1)
	}
	log.Info("debian image built", "took", time.Since(start).Round(time.Millisecond))
	return md, nil
}

// validSuite reports whether s is one of DebianSuites.
func validSuite(s string) bool {
	for _, v := range DebianSuites {
		if s == v {
			return true
		}
	}
	return false
}

// hostDpkgArch is the Debian architecture debootstrap installs by default.
func hostDpkgArch() string {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

// debootstrapAttempts is how often BuildDebian runs debootstrap before
// giving up: the mirror is the only network and it drops downloads now and
// then; the second attempt reuses the packages the first one fetched.
const debootstrapAttempts = 2

// debootstrap builds the base system in dst: the first stage (download and
// extract) on the host, then the second stage (dpkg) chrooted into dst with
// dpkg's force-unsafe-io, since a throwaway build need not fsync every file.
// Both run in a private mount namespace, so their proc, sys and dev mounts
// vanish with them whatever happens. Downloaded packages are kept in debs
// (when not empty) for a retry.
func debootstrap(ctx context.Context, opts DebianOptions, dst, debs string, p Progress) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return fmt.Errorf("debootstrap not installed (Debian package debootstrap): %w", err)
	}
	first := []string{"debootstrap", "--foreign", "--variant=minbase", "--include=" + strings.Join(debianPackages, ",")}
	if debs != "" {
		first = append(first, "--cache-dir="+debs)
	}
	first = append(first, opts.Suite, dst, opts.Mirror)
	tr := &debootstrapProgress{p: p, counts: map[string]int64{}}
	if err := runLogged(ctx, tr, first...); err != nil {
		return fmt.Errorf("debootstrap %s from %s: %w", opts.Suite, opts.Mirror, err)
	}
	unsafeIO := filepath.Join(dst, "etc/dpkg/dpkg.cfg.d/shoal-unsafe-io")
	if err := writeFile(unsafeIO, "force-unsafe-io\n", 0o644); err != nil {
		return err
	}
	if err := runLogged(ctx, tr, "chroot", dst, "/debootstrap/debootstrap", "--second-stage"); err != nil {
		return fmt.Errorf("debootstrap %s second stage: %w", opts.Suite, err)
	}
	return os.Remove(unsafeIO)
}

// runLogged runs argv in a private mount namespace and its own process group
// (killed as a whole when ctx ends), feeding its output to p.
func runLogged(ctx context.Context, p *debootstrapProgress, argv ...string) error {
	args := append([]string{"--mount", "--propagation", "private", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	tail := make(chan []string, 1)
	go func() { tail <- p.scan(pr) }()
	werr := cmd.Wait()
	pw.Close()
	last := <-tail
	if werr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w; last output:\n%s", werr, strings.Join(last, "\n"))
	}
	return nil
}

// debootstrapProgress turns debootstrap's output, over both stages, into
// Progress calls: one "download" per package retrieved (total unknown), then
// "extract", "unpack" and "configure" per package out of those retrieved.
type debootstrapProgress struct {
	p         Progress
	counts    map[string]int64
	retrieved int64
}

// debootstrapPhases maps debootstrap's verbs to progress phases.
var debootstrapPhases = map[string]string{
	"Retrieving": "download", "Extracting": "extract", "Unpacking": "unpack", "Configuring": "configure",
}

// scan reads debootstrap's output, reporting progress, and returns the last
// lines for error messages.
func (d *debootstrapProgress) scan(r io.Reader) []string {
	const keep = 20
	var last []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		logger().Debug("debootstrap", "line", line)
		if last = append(last, line); len(last) > keep {
			last = last[1:]
		}
		d.line(line)
	}
	io.Copy(io.Discard, r) // a too-long line stopped the scanner: drain
	return last
}

// line handles one line of debootstrap's output.
func (d *debootstrapProgress) line(line string) {
	msg, ok := strings.CutPrefix(line, "I: ")
	if !ok {
		return
	}
	if strings.HasPrefix(msg, "Resolving dependencies") {
		d.p("resolve", 0, -1)
		return
	}
	verb, rest, _ := strings.Cut(msg, " ")
	phase := debootstrapPhases[verb]
	// Skip "Retrieving InRelease", "Unpacking required packages...",
	// "Unpacking the base system..." and the like: not one package each.
	if phase == "" || rest == "" || strings.Contains(rest, "packages") || strings.HasPrefix(rest, "the ") ||
		strings.HasPrefix(rest, "InRelease") || strings.HasPrefix(rest, "Release") || strings.HasPrefix(rest, "Packages") {
		return
	}
	d.counts[phase]++
	if phase == "download" {
		d.retrieved = d.counts[phase]
		d.p(phase, d.retrieved, -1)
		return
	}
	d.p(phase, d.counts[phase], d.retrieved)
}

// customizeDebian prepares a debootstrapped rootfs for LXC and CRIU.
func customizeDebian(root string) error {
	files := []struct {
		name, body string
	}{
		{"etc/network/interfaces", debianInterfaces},
		{"etc/systemd/system/service.d/shoal-criu.conf", criuDropIn},
		{"etc/hostname", "debian\n"},
		{"etc/hosts", etcHosts},
		{"etc/machine-id", ""},
		{"etc/resolv.conf", ""},
	}
	for _, f := range files {
		p := filepath.Join(root, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("customize: %w", err)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) { // may be a symlink
			return fmt.Errorf("customize: %w", err)
		}
		if err := writeFile(p, f.body, 0o644); err != nil {
			return fmt.Errorf("customize: %w", err)
		}
	}
	for _, unit := range debianMasked {
		link := filepath.Join(root, "etc/systemd/system", unit)
		if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("customize: mask %s: %w", unit, err)
		}
		if err := os.Symlink("/dev/null", link); err != nil {
			return fmt.Errorf("customize: mask %s: %w", unit, err)
		}
	}
	// Enabled instances of masked templates would only log failures.
	_ = os.RemoveAll(filepath.Join(root, "etc/systemd/system/getty.target.wants"))
	// apt clean, and drop the package lists (55 MB; apt-get update first).
	for _, pattern := range []string{
		"var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*", "var/cache/apt/*.bin",
		"var/lib/apt/lists/*_*", "var/lib/apt/lists/partial/*", "var/lib/dbus/machine-id",
	} {
		matches, _ := filepath.Glob(filepath.Join(root, pattern))
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return fmt.Errorf("customize: %w", err)
			}
		}
	}
	return nil
}

// unpackCache unpacks the cached image at cache into dst if it exists and was
// built by the current recipe.
func unpackCache(ctx context.Context, cache, dst string, p Progress) (Metadata, error) {
	f, err := os.Open(cache)
	if err != nil {
		return Metadata{}, err
	}
	defer f.Close()
	md, err := peekMetadata(f)
	if err != nil {
		return Metadata{}, fmt.Errorf("cache %s: %w", cache, err)
	}
	if got := md.Properties["shoal.recipe"]; got != debianRecipe {
		return Metadata{}, fmt.Errorf("cache %s: recipe %q, want %q", cache, got, debianRecipe)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Metadata{}, fmt.Errorf("cache %s: %w", cache, err)
	}
	p("unpack-cache", 0, 1)
	md, err = Unpack(ctx, f, dst)
	if err != nil {
		return Metadata{}, err
	}
	p("unpack-cache", 1, 1)
	return md, nil
}

// writeCache packs root into cache atomically: a temporary file renamed into
// place once complete and synced.
func writeCache(ctx context.Context, root string, md Metadata, cache string) error {
	if err := os.MkdirAll(filepath.Dir(cache), 0o755); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(cache), "."+filepath.Base(cache)+".tmp-")
	if err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	defer os.Remove(f.Name()) // no-op once renamed
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := Pack(ctx, root, md, bw); err != nil {
		f.Close()
		return fmt.Errorf("cache: %w", err)
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("cache: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("cache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if err := os.Rename(f.Name(), cache); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	return nil
}
