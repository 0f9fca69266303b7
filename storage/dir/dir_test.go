package dir_test

import (
	"os"
	"testing"

	"github.com/shoal-dev/shoal/storage"
	"github.com/shoal-dev/shoal/storage/dir"
	"github.com/shoal-dev/shoal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "the storage conformance suite needs root (device nodes, chown to 1000000)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	storagetest.Run(t, func(t *testing.T) storage.Driver {
		d, err := dir.New(dir.Config{Path: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
}
