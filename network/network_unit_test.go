package network

import (
	"errors"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Name: "shoalbr0", IPv4CIDR: "10.87.0.1/24", StateDir: "/var/lib/shoal/net/shoalbr0"}
	cases := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"valid", func(*Config) {}, false},
		{"auto", func(c *Config) { c.IPv4CIDR = "auto" }, false},
		{"empty cidr means auto", func(c *Config) { c.IPv4CIDR = "" }, false},
		{"custom domain", func(c *Config) { c.Domain = "lab.example" }, false},
		{"15 chars", func(c *Config) { c.Name = strings.Repeat("a", 15) }, false},
		{"empty name", func(c *Config) { c.Name = "" }, true},
		{"16 chars", func(c *Config) { c.Name = strings.Repeat("a", 16) }, true},
		{"slash in name", func(c *Config) { c.Name = "br/0" }, true},
		{"space in name", func(c *Config) { c.Name = "br 0" }, true},
		{"leading dash", func(c *Config) { c.Name = "-br" }, true},
		{"dot name", func(c *Config) { c.Name = "." }, true},
		{"not a cidr", func(c *Config) { c.IPv4CIDR = "10.0.0.1" }, true},
		{"ipv6", func(c *Config) { c.IPv4CIDR = "fd00::1/64" }, true},
		{"network address", func(c *Config) { c.IPv4CIDR = "10.0.0.0/24" }, true},
		{"broadcast address", func(c *Config) { c.IPv4CIDR = "10.0.0.255/24" }, true},
		{"prefix too long", func(c *Config) { c.IPv4CIDR = "10.0.0.1/31" }, true},
		{"prefix too short", func(c *Config) { c.IPv4CIDR = "10.0.0.1/7" }, true},
		{"relative state dir", func(c *Config) { c.StateDir = "state" }, true},
		{"no state dir", func(c *Config) { c.StateDir = "" }, true},
		{"bad domain", func(c *Config) { c.Domain = "under_score" }, true},
		{"empty label", func(c *Config) { c.Domain = "a..b" }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("Validate(%+v) = %v, want ErrInvalidConfig", c, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate(%+v) = %v, want nil", c, err)
			}
		})
	}
}

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPickSubnet(t *testing.T) {
	first, err := pickSubnet("shoalbr0", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ones, bits := first.Mask.Size(); ones != 24 || bits != 32 || first.IP.To4()[0] != 10 {
		t.Fatalf("pickSubnet = %s, want a 10.x.y.0/24", first)
	}
	again, _ := pickSubnet("shoalbr0", nil)
	if again.String() != first.String() {
		t.Fatalf("not deterministic: %s then %s", first, again)
	}
	other, _ := pickSubnet("shoalbr1", nil)
	if other.String() == first.String() {
		t.Errorf("different names picked the same start %s (hash collision is possible but unlikely)", first)
	}

	// The first choice taken by an address: the next /24 is used.
	got, err := pickSubnet("shoalbr0", []*net.IPNet{{IP: addToIP(first.IP, 5), Mask: net.CIDRMask(32, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	if got.String() == first.String() || got.Contains(addToIP(first.IP, 5)) {
		t.Fatalf("picked %s which overlaps the used address", got)
	}

	// A wider route covering the start is skipped as a whole.
	wide := &net.IPNet{IP: first.IP.Mask(net.CIDRMask(16, 32)), Mask: net.CIDRMask(16, 32)}
	got, err = pickSubnet("shoalbr0", []*net.IPNet{wide})
	if err != nil {
		t.Fatal(err)
	}
	if overlaps(got, wide) {
		t.Fatalf("picked %s inside used %s", got, wide)
	}

	// All of 10/8 used: ErrNoFreeSubnet.
	if _, err := pickSubnet("x", []*net.IPNet{mustCIDR(t, "10.0.0.0/8")}); !errors.Is(err, ErrNoFreeSubnet) {
		t.Fatalf("full 10/8: err = %v, want ErrNoFreeSubnet", err)
	}
	// Something unrelated (a default-route-free host) changes nothing.
	got, _ = pickSubnet("shoalbr0", []*net.IPNet{mustCIDR(t, "192.0.2.0/24")})
	if got.String() != first.String() {
		t.Fatalf("unrelated route moved the pick: %s vs %s", got, first)
	}
}

func TestDHCPRange(t *testing.T) {
	lo, hi := dhcpRange(mustCIDR(t, "10.87.0.0/24"))
	if lo.String() != "10.87.0.2" || hi.String() != "10.87.0.254" {
		t.Fatalf("range = %s-%s", lo, hi)
	}
	lo, hi = dhcpRange(mustCIDR(t, "10.87.0.0/22"))
	if lo.String() != "10.87.0.2" || hi.String() != "10.87.3.254" {
		t.Fatalf("range /22 = %s-%s", lo, hi)
	}
}

func TestParseLeases(t *testing.T) {
	data := []byte("1700000000 00:16:3e:aa:bb:cc 10.1.2.3 web 01:00:16:3e:aa:bb:cc\n" +
		"0 00:16:3E:00:00:01 10.1.2.4 * *\n" +
		"duid 00:01:00:01:2c:00:00:00:00:00:00:00\n" +
		"1700000000 12345 fd00::5 v6host *\n")
	ls, err := parseLeases(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 {
		t.Fatalf("got %d leases, want 2: %+v", len(ls), ls)
	}
	if ls[0].MAC != "00:16:3e:aa:bb:cc" || ls[0].IP.String() != "10.1.2.3" || ls[0].Hostname != "web" || !ls[0].Expiry.Equal(time.Unix(1700000000, 0)) {
		t.Errorf("lease 0 = %+v", ls[0])
	}
	if ls[1].MAC != "00:16:3e:00:00:01" || ls[1].Hostname != "" || !ls[1].Expiry.IsZero() {
		t.Errorf("lease 1 = %+v", ls[1])
	}
	if _, err := parseLeases([]byte("garbage\n")); err == nil {
		t.Error("garbage parsed without error")
	}
}

func TestRandomMAC(t *testing.T) {
	re := regexp.MustCompile(`^00:16:3e:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}$`)
	seen := map[string]bool{}
	for range 100 {
		m := RandomMAC()
		if !re.MatchString(m) {
			t.Fatalf("RandomMAC() = %q", m)
		}
		seen[m] = true
	}
	if len(seen) < 95 {
		t.Fatalf("only %d distinct MACs in 100", len(seen))
	}
}

func TestDnsmasqArgs(t *testing.T) {
	gw := net.ParseIP("10.9.8.1").To4()
	args := dnsmasqArgs("br9", gw, mustCIDR(t, "10.9.8.0/24"), "shoal", false, pathsFor("/s"), []net.IP{net.ParseIP("192.0.2.53")})
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"--interface=br9", "--listen-address=10.9.8.1", "--dhcp-range=10.9.8.2,10.9.8.254,1h",
		"--bind-interfaces", "--except-interface=lo", "--conf-file=/dev/null", "--no-resolv",
		"--server=192.0.2.53", "--dhcp-leasefile=/s/dnsmasq.leases", "--dhcp-hostsfile=/s/dnsmasq.hosts",
		"--pid-file=/s/dnsmasq.pid", "--domain=shoal", "--local=/shoal/", "--strict-order",
		"--local=/8.9.10.in-addr.arpa/", "--domain-needed",
		"--dhcp-no-override", "--dhcp-authoritative", "--no-ping", "--keep-in-foreground",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("args lack %q: %s", want, joined)
		}
	}
}

func TestReverseZones(t *testing.T) {
	for cidr, want := range map[string]string{
		"10.87.5.0/24": "5.87.10.in-addr.arpa",
		"10.87.4.0/22": "4.87.10.in-addr.arpa 5.87.10.in-addr.arpa 6.87.10.in-addr.arpa 7.87.10.in-addr.arpa",
		"10.87.0.0/16": "87.10.in-addr.arpa",
		"10.87.5.8/30": "5.87.10.in-addr.arpa",
	} {
		if got := strings.Join(reverseZones(mustCIDR(t, cidr)), " "); got != want {
			t.Errorf("reverseZones(%s) = %s, want %s", cidr, got, want)
		}
	}
}

func TestUpstreamServers(t *testing.T) {
	path := t.TempDir() + "/resolv.conf"
	body := "search example\nnameserver 192.0.2.53\nnameserver 10.9.8.1\nnameserver fd00::53\nnameserver bogus\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	old := resolvConf
	resolvConf = path
	defer func() { resolvConf = old }()
	var got []string
	for _, ip := range upstreamServers(net.ParseIP("10.9.8.1")) {
		got = append(got, ip.String())
	}
	if strings.Join(got, " ") != "192.0.2.53 fd00::53" {
		t.Fatalf("upstreamServers = %v, want the gateway itself and junk skipped", got)
	}
}
