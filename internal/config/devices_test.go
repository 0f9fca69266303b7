package config

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateDevice(t *testing.T) {
	ok := []struct {
		typ string
		cfg map[string]string
	}{
		{"disk", map[string]string{"source": "/srv/data", "path": "/data"}},
		{"disk", map[string]string{"source": "/srv/data", "path": "/data", "readonly": "true", "required": "false"}},
		{"unix-char", map[string]string{"source": "/dev/fuse"}},
		{"unix-block", map[string]string{"source": "/dev/loop0", "path": "/dev/xvdb", "uid": "1000", "mode": "0600"}},
		{"proxy", map[string]string{"listen": "tcp:0.0.0.0:8080", "connect": "tcp:127.0.0.1:80"}},
		{"proxy", map[string]string{"listen": "udp:127.0.0.1:5353", "connect": "udp:127.0.0.1:53"}},
	}
	for _, c := range ok {
		if err := ValidateDevice("d1", c.typ, c.cfg); err != nil {
			t.Errorf("%s %v: %v", c.typ, c.cfg, err)
		}
	}
	bad := []struct {
		name, typ string
		cfg       map[string]string
		field     string
	}{
		{"d1", "floppy", nil, "devices.d1.type"},
		{"d1", "nic", nil, "devices.d1.type"},
		{"-x", "disk", nil, "devices.-x"},
		{"d1", "disk", map[string]string{"source": "/srv"}, "devices.d1.path"},
		{"d1", "disk", map[string]string{"source": "/srv", "path": "/"}, "devices.d1.path"},
		{"d1", "disk", map[string]string{"source": "srv", "path": "/data"}, "devices.d1.source"},
		{"d1", "disk", map[string]string{"source": "/srv/../etc", "path": "/data"}, "devices.d1.source"},
		{"d1", "disk", map[string]string{"source": "/srv", "path": "/data", "readonly": "maybe"}, "devices.d1.readonly"},
		{"d1", "disk", map[string]string{"source": "/srv", "path": "/data", "size": "1G"}, "devices.d1.size"},
		{"d1", "unix-char", map[string]string{"source": "/etc/passwd"}, "devices.d1.source"},
		{"d1", "unix-char", map[string]string{"source": "/dev/fuse", "mode": "999"}, "devices.d1.mode"},
		{"d1", "unix-char", map[string]string{"source": "/dev/fuse", "uid": "-1"}, "devices.d1.uid"},
		{"d1", "proxy", map[string]string{"listen": "tcp:0.0.0.0:8080", "connect": "udp:127.0.0.1:53"}, "devices.d1.connect"},
		{"d1", "proxy", map[string]string{"listen": "udp:0.0.0.0:53", "connect": "tcp:127.0.0.1:53"}, "devices.d1.connect"},
		{"d1", "proxy", map[string]string{"listen": "sctp:0.0.0.0:53", "connect": "tcp:127.0.0.1:53"}, "devices.d1.listen"},
		{"d1", "proxy", map[string]string{"listen": "unix:/run/x.sock", "connect": "tcp:127.0.0.1:53"}, "devices.d1.listen"},
	}
	for _, c := range bad {
		err := ValidateDevice(c.name, c.typ, c.cfg)
		if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), c.field+":") {
			t.Errorf("%s %s %v: got %v, want an error on %s", c.name, c.typ, c.cfg, err, c.field)
		}
	}
	if err := DevicePaths(map[string]string{"a": "/data", "b": "/data/"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("two devices at /data: %v", err)
	}
}
