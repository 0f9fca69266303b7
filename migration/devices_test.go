package migration

import (
	"errors"
	"strings"
	"testing"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func TestCheckLive(t *testing.T) {
	ct := &shoalv1.Container{Name: "c1"}
	if err := CheckLive(ct); err != nil {
		t.Fatalf("no devices: %v", err)
	}
	// A profile's disk device counts: the expanded devices are checked.
	ct.ExpandedDevices = map[string]*shoalv1.Device{"data": {Type: "disk", Config: map[string]string{"source": "/srv", "path": "/data"}}}
	err := CheckLive(ct)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "device data") || !strings.Contains(err.Error(), "/srv") {
		t.Fatalf("host path disk: %v", err)
	}
}

func TestCheckLiveCustomVolume(t *testing.T) {
	ct := &shoalv1.Container{Name: "c1", ExpandedDevices: map[string]*shoalv1.Device{
		"data": {Type: "disk", Config: map[string]string{"pool": "default", "source": "v1", "path": "/data"}}}}
	// A custom volume moves with it.
	if err := CheckLive(ct); err != nil {
		t.Fatalf("custom volume: %v", err)
	}
}
