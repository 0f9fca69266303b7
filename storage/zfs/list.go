package zfs

import (
	"fmt"
	"strconv"
	"strings"
)

// listProps are the columns of the one `zfs list` the driver reads its
// datasets with (see parseList).
var listProps = []string{"name", "type", "origin", "guid", "createtxg", "mounted", propVolume, propSnapshot}

// entry is one filesystem or snapshot under the driver's root dataset.
type entry struct {
	name      string // the full ZFS name ("tank/shoal/volumes/v@s" for a snapshot)
	snapshot  bool
	origin    string // a clone's origin snapshot, "" for none
	guid      uint64
	createtxg uint64
	mounted   bool
	volProp   string // propVolume ("" when unset)
	snapProp  string // propSnapshot ("" when unset)
}

// dataset is the filesystem part of a snapshot's name; snap the part after "@".
func (e *entry) dataset() string {
	ds, _, _ := strings.Cut(e.name, "@")
	return ds
}

func (e *entry) snap() string {
	_, s, _ := strings.Cut(e.name, "@")
	return s
}

// index is what one listing says: every entry by name, the snapshots of
// each filesystem in creation order, and the clones of each snapshot.
type index struct {
	byName map[string]*entry
	snaps  map[string][]*entry // by filesystem, by createtxg
	clones map[string][]string // by origin snapshot: the filesystems cloned from it
	fs     []*entry            // filesystems in listing order
}

// parseList reads the output of
//
//	zfs list -H -p -r -t filesystem,snapshot -o <listProps> -s createtxg ROOT
//
// (tab-separated, one dataset a line, "-" for a property without a value).
func parseList(out []byte) (*index, error) {
	ix := &index{byName: map[string]*entry{}, snaps: map[string][]*entry{}, clones: map[string][]string{}}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != len(listProps) {
			return nil, fmt.Errorf("zfs list: line %q has %d fields, want %d", line, len(f), len(listProps))
		}
		e := &entry{name: f[0], origin: unset(f[2]), mounted: f[5] == "yes", volProp: unset(f[6]), snapProp: unset(f[7])}
		switch f[1] {
		case "filesystem":
		case "snapshot":
			e.snapshot = true
			if !strings.Contains(e.name, "@") {
				return nil, fmt.Errorf("zfs list: snapshot %q has no @", e.name)
			}
		default:
			continue // volumes (zvols) and bookmarks are not the driver's
		}
		var err error
		if e.guid, err = strconv.ParseUint(f[3], 10, 64); err != nil {
			return nil, fmt.Errorf("zfs list: %s: guid %q: %w", e.name, f[3], err)
		}
		if e.createtxg, err = strconv.ParseUint(f[4], 10, 64); err != nil {
			return nil, fmt.Errorf("zfs list: %s: createtxg %q: %w", e.name, f[4], err)
		}
		ix.byName[e.name] = e
		if e.snapshot {
			ds := e.dataset()
			ix.snaps[ds] = append(ix.snaps[ds], e)
		} else {
			ix.fs = append(ix.fs, e)
			if e.origin != "" {
				ix.clones[e.origin] = append(ix.clones[e.origin], e.name)
			}
		}
	}
	// The listing is sorted by createtxg already; keep it so if it was not.
	for _, s := range ix.snaps {
		for i := 1; i < len(s); i++ {
			for j := i; j > 0 && s[j].createtxg < s[j-1].createtxg; j-- {
				s[j], s[j-1] = s[j-1], s[j]
			}
		}
	}
	return ix, nil
}

func unset(v string) string {
	if v == "-" {
		return ""
	}
	return v
}

// has reports whether the filesystem or snapshot exists.
func (ix *index) has(name string) bool {
	_, ok := ix.byName[name]
	return ok
}

// snapshotByGUID finds the snapshot of filesystem ds with that guid.
func (ix *index) snapshotByGUID(ds string, guid uint64) *entry {
	for _, s := range ix.snaps[ds] {
		if s.guid == guid {
			return s
		}
	}
	return nil
}

// after returns the snapshots of ds taken after snapshot name (all of
// them, the driver's hidden ones included).
func (ix *index) after(ds, name string) []*entry {
	s := ix.snaps[ds]
	for i, e := range s {
		if e.name == name {
			return s[i+1:]
		}
	}
	return nil
}
