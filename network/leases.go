package network

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Lease is one DHCP lease as dnsmasq recorded it.
type Lease struct {
	// MAC is the client's hardware address, lower case, colon separated.
	MAC string
	// IP is the leased IPv4 address.
	IP net.IP
	// Hostname is the name the client sent or the static lease gave; empty
	// when there is none.
	Hostname string
	// Expiry is when the lease ends; zero for an infinite lease.
	Expiry time.Time
}

// parseLeases reads dnsmasq's lease file format:
// "<expiry-unix> <mac> <ip> <hostname|*> <client-id|*>" per line. IPv6
// lines ("duid ...", addresses with ':') are skipped.
func parseLeases(data []byte) ([]Lease, error) {
	var out []Lease
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] == "duid" {
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("lease line %d: want at least 4 fields, got %d", line, len(f))
		}
		exp, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("lease line %d: expiry %q: %w", line, f[0], err)
		}
		ip := net.ParseIP(f[2])
		if ip == nil {
			return nil, fmt.Errorf("lease line %d: bad address %q", line, f[2])
		}
		if ip.To4() == nil {
			continue
		}
		l := Lease{MAC: strings.ToLower(f[1]), IP: ip.To4()}
		if f[3] != "*" {
			l.Hostname = f[3]
		}
		if exp != 0 {
			l.Expiry = time.Unix(exp, 0)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// staticLease is one line of the dhcp-hostsfile: "<mac>,<ip>[,<hostname>]".
type staticLease struct {
	mac, hostname string
	ip            net.IP
}

func (s staticLease) line() string {
	if s.hostname == "" {
		return s.mac + "," + s.ip.String()
	}
	return s.mac + "," + s.ip.String() + "," + s.hostname
}

func readStatic(path string) ([]staticLease, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read static leases %s: %w", path, err)
	}
	var out []staticLease
	for _, ln := range strings.Split(string(raw), "\n") {
		ln = strings.TrimSpace(ln)
		if ln == "" || strings.HasPrefix(ln, "#") {
			continue
		}
		f := strings.Split(ln, ",")
		if len(f) < 2 {
			return nil, fmt.Errorf("read static leases %s: bad line %q", path, ln)
		}
		s := staticLease{mac: strings.ToLower(f[0]), ip: net.ParseIP(f[1])}
		if len(f) > 2 {
			s.hostname = f[2]
		}
		out = append(out, s)
	}
	return out, nil
}

// writeStatic replaces the hosts file atomically (dnsmasq re-opens it by
// path on SIGHUP). The file is world-readable: dnsmasq reads it after
// dropping privileges.
func writeStatic(path string, leases []staticLease) error {
	sort.Slice(leases, func(i, j int) bool { return leases[i].mac < leases[j].mac })
	var b strings.Builder
	b.WriteString("# managed by shoal; edits are overwritten\n")
	for _, l := range leases {
		b.WriteString(l.line())
		b.WriteByte('\n')
	}
	if err := writeAtomic(path, b.String()); err != nil {
		return fmt.Errorf("write static leases %s: %w", path, err)
	}
	return nil
}

// writeAtomic replaces path with content through a temporary file and a
// rename, world-readable: dnsmasq reads its files after dropping root, and
// re-opens them by path on SIGHUP.
func writeAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ensureStaticFile creates an empty hosts file if there is none: dnsmasq
// refuses to start when its dhcp-hostsfile is missing.
func ensureStaticFile(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	return writeStatic(path, nil)
}

// readStable reads a file dnsmasq rewrites in place (truncate, then write)
// until two reads in a row agree, so a half-written file is not parsed.
func readStable(path string) ([]byte, error) {
	prev, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for range 10 {
		cur, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(prev, cur) {
			return cur, nil
		}
		prev = cur
		time.Sleep(5 * time.Millisecond)
	}
	return prev, nil
}

// Leases returns the current IPv4 leases from dnsmasq's lease file.
func (n *Network) Leases() ([]Lease, error) {
	raw, err := readStable(n.paths.leases)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read leases of %s: %w", n.name, err)
	}
	ls, err := parseLeases(raw)
	if err != nil {
		return nil, fmt.Errorf("parse leases of %s: %w", n.name, err)
	}
	return ls, nil
}

// LeaseFor returns the leased address of mac, if it has a lease.
func (n *Network) LeaseFor(mac string) (net.IP, bool) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, false
	}
	ls, err := n.Leases()
	if err != nil {
		return nil, false
	}
	for _, l := range ls {
		if l.MAC == hw.String() {
			return l.IP, true
		}
	}
	return nil, false
}

// SetStaticLease pins ip (and optionally hostname) to mac. The address must
// be a host address of the subnet other than the gateway and not pinned to
// another MAC. dnsmasq picks it up at once (SIGHUP); a client holding another
// address gets the pinned one when it next asks.
func (n *Network) SetStaticLease(ctx context.Context, mac string, ip net.IP, hostname string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("set static lease on %s: %w: bad MAC %q", n.name, ErrInvalidConfig, mac)
	}
	ip4 := ip.To4()
	if ip4 == nil || !n.subnet.Contains(ip4) || ip4.Equal(n.gateway) ||
		ip4.Equal(n.subnet.IP) || ip4.Equal(broadcast(n.subnet)) {
		return fmt.Errorf("set static lease on %s: %w: %s is not a free host address of %s", n.name, ErrInvalidConfig, ip, n.subnet)
	}
	if hostname != "" && !validHostname(hostname) {
		return fmt.Errorf("set static lease on %s: %w: bad hostname %q", n.name, ErrInvalidConfig, hostname)
	}
	n.leaseMu.Lock()
	defer n.leaseMu.Unlock()
	cur, err := readStatic(n.paths.hosts)
	if err != nil {
		return err
	}
	next := []staticLease{{mac: hw.String(), ip: ip4, hostname: hostname}}
	for _, s := range cur {
		if s.mac == hw.String() {
			continue
		}
		if s.ip.Equal(ip4) {
			return fmt.Errorf("set static lease on %s: %w: %s is already pinned to %s", n.name, ErrInvalidConfig, ip4, s.mac)
		}
		next = append(next, s)
	}
	if err := writeStatic(n.paths.hosts, next); err != nil {
		return err
	}
	return n.reload()
}

// RemoveStaticLease unpins mac. It returns ErrNotFound if mac had no
// static lease.
func (n *Network) RemoveStaticLease(ctx context.Context, mac string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("remove static lease on %s: %w: bad MAC %q", n.name, ErrInvalidConfig, mac)
	}
	n.leaseMu.Lock()
	defer n.leaseMu.Unlock()
	cur, err := readStatic(n.paths.hosts)
	if err != nil {
		return err
	}
	next := cur[:0]
	found := false
	for _, s := range cur {
		if s.mac == hw.String() {
			found = true
			continue
		}
		next = append(next, s)
	}
	if !found {
		return fmt.Errorf("remove static lease %s on %s: %w", hw, n.name, ErrNotFound)
	}
	if err := writeStatic(n.paths.hosts, next); err != nil {
		return err
	}
	return n.reload()
}

// RandomMAC returns a random MAC in LXD's "00:16:3e:xx:xx:xx" range.
func RandomMAC() string {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return fmt.Sprintf("00:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}
