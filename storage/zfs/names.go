package zfs

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// ZFS names allow letters, digits and "-_.: " in a component, with "/"
// between datasets and "@" before a snapshot, and at most 255 bytes in
// all; Shoal's names also use "/", "+" and "@" and may be 200 bytes long.
// A Shoal name maps to one component by escaping: "_" becomes "__", "/"
// "_s", "+" "_p" and "@" "_a". An escape longer than maxComponent becomes
// hashPrefix and a digest of the name instead, and the dataset or snapshot
// then carries its name in a user property (propVolume, propSnapshot).
// Components the driver makes for itself start with "_" and a letter no
// escape uses, so they never meet a mapped name.
const (
	maxComponent = 80
	hashPrefix   = "_h"
	// cloneSnapPrefix starts the hidden snapshot CloneVolume takes of its
	// source; deletedSnapPrefix a snapshot deleted while clones depend on it.
	cloneSnapPrefix   = "_c"
	deletedSnapPrefix = "_d"
	// In the internal dataset: receives in progress and volumes deleted
	// while clones still depend on their snapshots.
	recvPrefix    = "_r"
	deletedPrefix = "_x"
)

// User properties that hold the Shoal name of a hashed component.
const (
	propVolume   = "shoal:volume"
	propSnapshot = "shoal:snapshot"
)

// escape maps a valid Shoal name to a ZFS name component (see above).
func escape(name string) string {
	var b strings.Builder
	for _, c := range []byte(name) {
		switch c {
		case '_':
			b.WriteString("__")
		case '/':
			b.WriteString("_s")
		case '+':
			b.WriteString("_p")
		case '@':
			b.WriteString("_a")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescape reverses escape; ok is false for a component escape cannot
// have made (a hashed or internal one among them).
func unescape(c string) (name string, ok bool) {
	var b strings.Builder
	for i := 0; i < len(c); i++ {
		if c[i] != '_' {
			b.WriteByte(c[i])
			continue
		}
		if i+1 == len(c) {
			return "", false
		}
		i++
		switch c[i] {
		case '_':
			b.WriteByte('_')
		case 's':
			b.WriteByte('/')
		case 'p':
			b.WriteByte('+')
		case 'a':
			b.WriteByte('@')
		default:
			return "", false
		}
	}
	return b.String(), true
}

// component maps a valid Shoal name to its component: the escape, or the
// digest form when the escape is too long. hashed says which.
func component(name string) (c string, hashed bool) {
	if e := escape(name); len(e) <= maxComponent {
		return e, false
	}
	sum := sha256.Sum256([]byte(name))
	return hashPrefix + hex.EncodeToString(sum[:20]), true
}

// nameOf returns the Shoal name a component stands for: its unescape, or
// for a digest form the value of its name property (prop, "-" when unset).
// ok is false for internal components and digests without a property.
func nameOf(c, prop string) (string, bool) {
	if strings.HasPrefix(c, hashPrefix) {
		if prop == "" || prop == "-" {
			return "", false
		}
		return prop, true
	}
	return unescape(c)
}

// hidden reports whether a snapshot component is one of the driver's own
// (a clone's origin, or deleted while clones depend on it).
func hidden(snapComponent string) bool {
	return strings.HasPrefix(snapComponent, cloneSnapPrefix) || strings.HasPrefix(snapComponent, deletedSnapPrefix)
}

// randomSuffix returns 16 random hex digits for the driver's own names.
func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
