package storage

import (
	"fmt"
	"strings"
)

// maxNameLen bounds a snapshot name and the encoded form of a volume name,
// leaving room below the 255-byte limit of one path component.
const maxNameLen = 200

// ValidateVolumeName checks a volume name: slash-separated parts, no leading
// or trailing "/", no empty part, and every part a valid part (see
// ValidateSnapshotName). The error wraps ErrInvalidName.
func ValidateVolumeName(vol string) error {
	if vol == "" {
		return fmt.Errorf("volume name is empty: %w", ErrInvalidName)
	}
	if len(EncodeVolumeName(vol)) > maxNameLen {
		return fmt.Errorf("volume name %q is longer than %d bytes encoded: %w", vol, maxNameLen, ErrInvalidName)
	}
	for _, p := range strings.Split(vol, "/") {
		if err := validPart(p); err != nil {
			return fmt.Errorf("volume name %q: %w", vol, err)
		}
	}
	return nil
}

// ValidateSnapshotName checks a snapshot name: one non-empty part of at most
// 200 bytes made of ASCII letters, digits and "-_.:+@", not starting with
// ".". The error wraps ErrInvalidName.
func ValidateSnapshotName(snap string) error {
	if len(snap) > maxNameLen {
		return fmt.Errorf("snapshot name %q is longer than %d bytes: %w", snap, maxNameLen, ErrInvalidName)
	}
	if err := validPart(snap); err != nil {
		return fmt.Errorf("snapshot name %q: %w", snap, err)
	}
	return nil
}

func validPart(p string) error {
	if p == "" {
		return fmt.Errorf("empty part: %w", ErrInvalidName)
	}
	if p[0] == '.' {
		return fmt.Errorf("part %q starts with \".\": %w", p, ErrInvalidName)
	}
	for _, c := range []byte(p) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '@':
		default:
			return fmt.Errorf("part %q has character %q: %w", p, c, ErrInvalidName)
		}
	}
	return nil
}

// EncodeVolumeName maps a valid volume name to a single path component, so
// that volumes never nest inside each other on disk: "/" becomes "%2F"
// ("containers/c1" → "containers%2Fc1"). Valid names contain no "%", so the
// mapping is reversible with DecodeVolumeName.
func EncodeVolumeName(vol string) string {
	return strings.ReplaceAll(vol, "/", "%2F")
}

// DecodeVolumeName reverses EncodeVolumeName; ok is false when enc is not
// the encoding of a valid volume name.
func DecodeVolumeName(enc string) (vol string, ok bool) {
	vol = strings.ReplaceAll(enc, "%2F", "/")
	if ValidateVolumeName(vol) != nil || EncodeVolumeName(vol) != enc {
		return "", false
	}
	return vol, true
}
