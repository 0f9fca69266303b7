package runtime

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/node/idmap"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

func TestGenerateConfigGolden(t *testing.T) {
	v1 := Host{Memsw: true, BFQWeight: true, NestingConf: true}
	m := idmap.Map{HostUID: 1000000, HostGID: 1000000, Size: 65536}
	full := Limits{CPUSet: "0-1", CPUQuotaUs: 50000, CPUPeriodUs: 100000, MemoryBytes: 256 << 20, Processes: 500, DiskPriority: 7}
	nics := []NIC{
		{Name: "eth0", Bridge: "shoalbr0", HWAddr: "02:00:00:00:00:01", HostName: "veth-c1"},
		{Name: "eth1", Bridge: "shoalbr1"},
	}
	tests := []struct {
		golden string
		spec   Spec
		host   Host
	}{
		{"privileged-minimal", Spec{Name: "c1", Rootfs: "/var/lib/shoal/c1/rootfs", Privileged: true}, v1},
		{"unprivileged-full-v1", Spec{Name: "c2", Hostname: "web", Rootfs: "/pool/c2", IDMap: m, Nesting: true,
			Limits: full, NICs: nics, Autostart: true}, v1},
		{"unprivileged-v1-no-memsw-no-bfq", Spec{Name: "c3", Rootfs: "/pool/c3", IDMap: m, Limits: full}, Host{}},
		{"unprivileged-v2-apparmor", Spec{Name: "c4", Rootfs: "/pool/c4", IDMap: m, Nesting: true, Limits: full},
			Host{CgroupV2: true, BFQWeight: true, AppArmor: true, NestingConf: true}},
	}
	for _, tc := range tests {
		t.Run(tc.golden, func(t *testing.T) {
			if err := tc.spec.Validate(); err != nil {
				t.Fatal(err)
			}
			got := GenerateConfig(tc.spec, tc.host, "/var/lib/shoal/lxc")
			path := filepath.Join("testdata", tc.golden+".conf")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if got != string(want) {
				t.Fatalf("config differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
			}
			if !tc.host.AppArmor && strings.Contains(got, "apparmor") {
				t.Fatal("apparmor key on a host without AppArmor")
			}
		})
	}
}

func TestReplaceLimits(t *testing.T) {
	h := Host{Memsw: true}
	spec := Spec{Name: "c", Rootfs: "/r", Privileged: true, Autostart: true,
		Limits: Limits{MemoryBytes: 100, Processes: 5, CPUQuotaUs: 10}}
	conf := GenerateConfig(spec, h, "/l")
	got := ReplaceLimits(conf, Limits{MemoryBytes: 200}, h)
	spec.Limits = Limits{MemoryBytes: 200}
	if want := GenerateConfig(spec, h, "/l"); got != want {
		t.Fatalf("ReplaceLimits:\n%s\nwant\n%s", got, want)
	}
}

func TestValidate(t *testing.T) {
	ok := Spec{Name: "a-1", Rootfs: "/r", Privileged: true}
	bad := []Spec{
		{Name: "", Rootfs: "/r", Privileged: true},
		{Name: "a/b", Rootfs: "/r", Privileged: true},
		{Name: "a", Rootfs: "r", Privileged: true},
		{Name: "a", Rootfs: "/r\nlxc.foo = 1", Privileged: true},
		{Name: "a", Rootfs: "/r"},
		{Name: "a", Rootfs: "/r", Privileged: true, Limits: Limits{DiskPriority: 11}},
		{Name: "a", Rootfs: "/r", Privileged: true, NICs: []NIC{{Name: "eth0"}}},
		{Name: "a", Rootfs: "/r", Privileged: true, NICs: []NIC{{Name: "eth0", Bridge: "b r"}}},
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for i, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", i, s)
		}
	}
}

func TestCanEnforce(t *testing.T) {
	tests := []struct {
		host Host
		want string // CanEnforce("limits.disk.priority"), "" for nil
	}{
		{Host{BFQWeight: true, IOSchedulers: "mq-deadline kyber bfq none"}, ""},
		{Host{IOSchedulers: "none mq-deadline kyber"},
			"limits.disk.priority: this host cannot enforce I/O weights (no BFQ scheduler on its block devices; offered: none mq-deadline kyber)"},
		{Host{}, "limits.disk.priority: this host cannot enforce I/O weights (no BFQ scheduler: no block device offers an I/O scheduler)"},
		{Host{IOSchedulers: "none bfq"},
			"limits.disk.priority: this host cannot enforce I/O weights (BFQ is offered, but the blkio controller has no bfq weight files)"},
		{Host{CgroupV2: true, IOSchedulers: "none bfq"},
			"limits.disk.priority: this host cannot enforce I/O weights (BFQ is offered, but the cgroup v2 io controller gives containers no io.bfq.weight)"},
	}
	for _, tc := range tests {
		err := tc.host.CanEnforce("limits.disk.priority")
		if tc.want == "" {
			if err != nil || len(tc.host.Unenforceable()) != 0 {
				t.Errorf("%+v: %v, %v", tc.host, err, tc.host.Unenforceable())
			}
			continue
		}
		if err == nil || err.Error() != tc.want || !errors.Is(err, ErrUnenforceable) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v\nwant %s", tc.host, err, tc.want)
		}
		if got := tc.host.Unenforceable()["limits.disk.priority"]; "limits.disk.priority: "+got != tc.want {
			t.Errorf("%+v: Unenforceable %q", tc.host, got)
		}
		if err := tc.host.CanEnforce("limits.memory"); err != nil {
			t.Errorf("limits.memory: %v", err)
		}
		if err := tc.host.checkLimits(Limits{MemoryBytes: 1 << 30}); err != nil {
			t.Errorf("limits without a disk priority: %v", err)
		}
		if err := tc.host.checkLimits(Limits{DiskPriority: 3}); !errors.Is(err, ErrUnenforceable) {
			t.Errorf("disk priority 3: %v", err)
		}
	}
}
