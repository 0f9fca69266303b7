package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/node/images"
)

func TestGenerateConfigApplication(t *testing.T) {
	spec := Spec{Name: "app", Rootfs: "/r", Privileged: true, App: &images.AppConfig{
		Args: []string{"/bin/sh", "-c", `echo "up" > /srv/up; exec sleep 1000`, `x'y`},
		Env:  []string{"PATH=/bin", "GREETING=hi there"}, Cwd: "/srv", UID: 1000, GID: 50,
	}}
	conf := GenerateConfig(spec, Host{}, "/l")
	for _, want := range []string{
		`lxc.execute.cmd = '"/bin/sh" "-c" 'echo "up" > /srv/up; exec sleep 1000' "x'y"'` + "\n",
		"lxc.environment = PATH=/bin\n", "lxc.environment = GREETING=hi there\n",
		"lxc.init.cwd = /srv\n", "lxc.init.uid = 1000\n", "lxc.init.gid = 50\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(GenerateConfig(Spec{Name: "sys", Rootfs: "/r", Privileged: true}, Host{}, "/l"), "lxc.execute") {
		t.Error("a system container got lxc.execute.cmd")
	}
}

func TestLoadAppFromRootfs(t *testing.T) {
	root := t.TempDir()
	spec := Spec{Name: "c", Rootfs: root}
	if err := loadApp(&spec); err != nil || spec.App != nil {
		t.Fatalf("loadApp without a file: %+v, %v", spec.App, err)
	}
	os.MkdirAll(filepath.Join(root, ".shoal"), 0o755)
	os.WriteFile(filepath.Join(root, images.AppConfigPath), []byte(`{"args":["/app"],"env":["A=1\nlxc.mount.entry = / x none bind 0 0"]}`), 0o644)
	if err := loadApp(&spec); err == nil {
		t.Fatalf("loadApp took an env entry with a line break: %+v", spec.App)
	}
	os.WriteFile(filepath.Join(root, images.AppConfigPath), []byte(`{"args":["/app","x"],"cwd":"/w","uid":5}`), 0o644)
	spec.App = nil
	if err := loadApp(&spec); err != nil || spec.App == nil || spec.App.Args[1] != "x" || spec.App.UID != 5 {
		t.Fatalf("loadApp: %+v, %v", spec.App, err)
	}
}
