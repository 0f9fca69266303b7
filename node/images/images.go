package images

import (
	"errors"
	"fmt"
	"log/slog"

	"go.yaml.in/yaml/v3"
)

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrNotFound means no image has the given fingerprint or prefix.
	ErrNotFound = errors.New("image not found")
	// ErrAmbiguous means a fingerprint prefix matches more than one image.
	ErrAmbiguous = errors.New("ambiguous image fingerprint prefix")
	// ErrInvalid means an argument or an image tarball is malformed or unsafe.
	ErrInvalid = errors.New("invalid image")
)

// Metadata is an image's metadata.yaml, in LXD's format.
type Metadata struct {
	// Architecture is the kernel's name for the image's architecture
	// ("x86_64", "aarch64").
	Architecture string `yaml:"architecture"`
	// CreationDate is the build time in Unix seconds.
	CreationDate int64 `yaml:"creation_date"`
	// Properties describe the image: os, release, description, variant, serial.
	Properties map[string]string `yaml:"properties"`
}

// Image is one image in a Store.
type Image struct {
	// Fingerprint is the lowercase hex SHA-256 of the image tarball's bytes.
	Fingerprint string `yaml:"fingerprint"`
	// Size is the tarball's size in bytes.
	Size int64 `yaml:"size"`
	// Metadata is the tarball's metadata.yaml.
	Metadata Metadata `yaml:"metadata"`
}

// Progress reports a builder's progress: a phase name, units done and the
// total, which is -1 when unknown. It is called from the building goroutine
// and must not block.
type Progress func(phase string, done, total int64)

// metadataName is the name of the metadata file inside a unified tarball.
const metadataName = "metadata.yaml"

// rootfsPrefix is the prefix of every root filesystem entry in a tarball.
const rootfsPrefix = "rootfs/"

// logger returns the package's logger, from the default one at call time
// (so the daemon's slog.SetDefault applies).
func logger() *slog.Logger { return slog.Default().With("component", "images") }

// parseMetadata decodes and checks a metadata.yaml document.
func parseMetadata(b []byte) (Metadata, error) {
	var md Metadata
	if err := yaml.Unmarshal(b, &md); err != nil {
		return Metadata{}, fmt.Errorf("%w: metadata.yaml: %v", ErrInvalid, err)
	}
	if md.Architecture == "" {
		return Metadata{}, fmt.Errorf("%w: metadata.yaml: no architecture", ErrInvalid)
	}
	return md, nil
}

// marshalMetadata encodes md as metadata.yaml.
func marshalMetadata(md Metadata) ([]byte, error) {
	b, err := yaml.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("encode metadata.yaml: %w", err)
	}
	return b, nil
}

// kernelArch maps an ELF machine or Go/dpkg architecture name to the kernel's
// name, the one LXD puts in metadata.yaml.
func kernelArch(name string) string {
	switch name {
	case "amd64", "EM_X86_64":
		return "x86_64"
	case "arm64", "EM_AARCH64":
		return "aarch64"
	case "386", "i386", "EM_386":
		return "i686"
	case "arm", "armhf", "EM_ARM":
		return "armv7l"
	case "ppc64le", "ppc64el", "EM_PPC64":
		return "ppc64le"
	case "s390x", "EM_S390":
		return "s390x"
	case "riscv64", "EM_RISCV":
		return "riscv64"
	}
	return name
}

// ParseMetadata decodes and checks a metadata.yaml document (as found in a
// split image's metadata tarball).
func ParseMetadata(b []byte) (Metadata, error) { return parseMetadata(b) }

// MarshalMetadata encodes a metadata.yaml document.
func MarshalMetadata(md Metadata) ([]byte, error) { return marshalMetadata(md) }
