package idmap

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// DefaultSize is the number of ids a container gets: a full 16-bit range.
const DefaultSize = 65536

// ErrNoRange is returned when the user has no usable subordinate id range.
var ErrNoRange = errors.New("idmap: no usable subordinate id range")

// Map maps container ids 0..Size-1 to host ids HostUID.. (users) and
// HostGID.. (groups). The zero Map maps nothing.
type Map struct {
	HostUID uint32
	HostGID uint32
	Size    uint32
}

// Default files read by FromSubID.
var (
	subUIDFile = "/etc/subuid"
	subGIDFile = "/etc/subgid"
)

// FromSubID reads /etc/subuid and /etc/subgid and builds a Map of DefaultSize
// ids from user's first range in each. It fails with ErrNoRange when the user
// has no range or a range smaller than DefaultSize.
func FromSubID(user string) (Map, error) {
	return FromFiles(user, subUIDFile, subGIDFile)
}

// FromFiles is FromSubID reading the given subuid and subgid files.
func FromFiles(user, subUIDPath, subGIDPath string) (Map, error) {
	u, err := firstRange(subUIDPath, user)
	if err != nil {
		return Map{}, err
	}
	g, err := firstRange(subGIDPath, user)
	if err != nil {
		return Map{}, err
	}
	return Map{HostUID: u, HostGID: g, Size: DefaultSize}, nil
}

// firstRange returns the start of user's first range of at least DefaultSize
// ids in a subuid/subgid style file.
func firstRange(path, user string) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("idmap: read %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 || parts[0] != user {
			continue
		}
		start, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("idmap: %s: malformed line %q", path, line)
		}
		if count < DefaultSize {
			return 0, fmt.Errorf("%w: %s: %s has %d ids, need %d", ErrNoRange, path, user, count, DefaultSize)
		}
		if start+DefaultSize > 1<<32-1 {
			return 0, fmt.Errorf("%w: %s: range of %s overflows", ErrNoRange, path, user)
		}
		return uint32(start), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("idmap: read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%w: %s has no range for %s", ErrNoRange, path, user)
}

// IsZero reports whether m maps nothing.
func (m Map) IsZero() bool { return m.Size == 0 }

// LXCConfig renders m as lxc.idmap lines (users first, then groups).
func (m Map) LXCConfig() []string {
	return []string{
		fmt.Sprintf("lxc.idmap = u 0 %d %d", m.HostUID, m.Size),
		fmt.Sprintf("lxc.idmap = g 0 %d %d", m.HostGID, m.Size),
	}
}

// ToHost converts container ids to host ids. Ids outside the mapped range
// are returned unchanged; use Contains to check first.
func (m Map) ToHost(uid, gid uint32) (uint32, uint32) {
	if uid < m.Size {
		uid += m.HostUID
	}
	if gid < m.Size {
		gid += m.HostGID
	}
	return uid, gid
}

// ToContainer converts host ids to container ids. Ids outside the mapped
// range are returned unchanged.
func (m Map) ToContainer(uid, gid uint32) (uint32, uint32) {
	if uid >= m.HostUID && uid-m.HostUID < m.Size {
		uid -= m.HostUID
	}
	if gid >= m.HostGID && gid-m.HostGID < m.Size {
		gid -= m.HostGID
	}
	return uid, gid
}

// Contains reports whether the container ids uid and gid are both mapped.
func (m Map) Contains(uid, gid uint32) bool {
	return uid < m.Size && gid < m.Size
}

// String renders m for logs.
func (m Map) String() string {
	return fmt.Sprintf("u:0->%d g:0->%d n:%d", m.HostUID, m.HostGID, m.Size)
}
