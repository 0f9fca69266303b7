package ipam

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// Sentinel errors callers branch on.
var (
	// ErrInvalid reports a CIDR or address that is not usable IPv4.
	ErrInvalid = errors.New("invalid address")
	// ErrOutOfRange reports a static address outside the network or one of
	// its reserved addresses.
	ErrOutOfRange = errors.New("address not available on the network")
	// ErrExhausted reports that every address of the network is in use.
	ErrExhausted = errors.New("no free address")
)

// Pool is the usable addresses of one IPv4 network.
type Pool struct {
	gateway     uint32
	first, last uint32 // usable range, inclusive
	cidr        string
}

// NewPool parses a network's "GATEWAY/PREFIX" (10.42.0.1/16). The subnet
// must leave at least one address besides the gateway (/30 or larger).
func NewPool(cidr string) (Pool, error) {
	ip, subnet, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return Pool{}, fmt.Errorf("%w: %q: want IPv4 GATEWAY/PREFIX such as 10.42.0.1/16", ErrInvalid, cidr)
	}
	ones, bits := subnet.Mask.Size()
	if bits != 32 || ones > 30 || ones < 8 {
		return Pool{}, fmt.Errorf("%w: %q: want a prefix from /8 to /30", ErrInvalid, cidr)
	}
	base := toU32(subnet.IP)
	size := uint32(1) << (32 - ones)
	p := Pool{gateway: toU32(ip), first: base + 1, last: base + size - 2, cidr: cidr}
	if p.gateway < p.first || p.gateway > p.last {
		return Pool{}, fmt.Errorf("%w: %q: the gateway is the network or broadcast address", ErrInvalid, cidr)
	}
	return p, nil
}

// Size is how many addresses containers can have.
func (p Pool) Size() int { return int(p.last-p.first+1) - 1 }

// Contains reports whether ip is in the pool's subnet.
func (p Pool) Contains(ip net.IP) bool {
	v4 := ip.To4()
	if v4 == nil {
		return false
	}
	u := toU32(v4)
	return u >= p.first-1 && u <= p.last+1
}

// Check accepts a static address: IPv4, inside the subnet, and not the
// network, broadcast or gateway address.
func (p Pool) Check(ip net.IP) error {
	v4 := ip.To4()
	if v4 == nil {
		return fmt.Errorf("%w: %q: want an IPv4 address", ErrInvalid, ip)
	}
	u := toU32(v4)
	switch {
	case u < p.first || u > p.last:
		return fmt.Errorf("%w: %s is outside %s or is its network or broadcast address", ErrOutOfRange, v4, p.cidr)
	case u == p.gateway:
		return fmt.Errorf("%w: %s is the gateway of %s", ErrOutOfRange, v4, p.cidr)
	}
	return nil
}

// Next returns the lowest usable address for which used is false. The
// result depends only on used, so replicas that agree on what is used
// agree on the address.
func (p Pool) Next(used func(net.IP) bool) (net.IP, error) {
	for u := p.first; u <= p.last && u >= p.first; u++ {
		if u == p.gateway {
			continue
		}
		ip := fromU32(u)
		if !used(ip) {
			return ip, nil
		}
	}
	return nil, fmt.Errorf("%w: all %d addresses of %s are in use", ErrExhausted, p.Size(), p.cidr)
}

func toU32(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func fromU32(u uint32) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, u)
	return ip
}

// Used is a set of a pool's addresses in use, as a bitmap, so that the
// lowest free one is found a word (64 addresses) at a time.
type Used struct {
	words []uint64
	n     int
}

// Add marks ip used; an address outside the pool is ignored.
func (p Pool) Add(u *Used, ip net.IP) {
	if i, ok := p.offset(ip); ok {
		for len(u.words) <= i/64 {
			u.words = append(u.words, 0)
		}
		if u.words[i/64]&(1<<(i%64)) == 0 {
			u.words[i/64] |= 1 << (i % 64)
			u.n++
		}
	}
}

// Remove marks ip free.
func (p Pool) Remove(u *Used, ip net.IP) {
	if i, ok := p.offset(ip); ok && i/64 < len(u.words) && u.words[i/64]&(1<<(i%64)) != 0 {
		u.words[i/64] &^= 1 << (i % 64)
		u.n--
	}
}

// Has reports whether ip is marked used.
func (p Pool) Has(u *Used, ip net.IP) bool {
	i, ok := p.offset(ip)
	return ok && i/64 < len(u.words) && u.words[i/64]&(1<<(i%64)) != 0
}

// NextFree is Next over a Used set: the lowest usable address not in u
// (and for which also is false, when given), found a word at a time.
func (p Pool) NextFree(u *Used, also func(net.IP) bool) (net.IP, error) {
	size := int(p.last - p.first + 1)
	for w := 0; w*64 < size; w++ {
		var word uint64
		if w < len(u.words) {
			word = u.words[w]
		}
		if word == ^uint64(0) {
			continue
		}
		for b := 0; b < 64 && w*64+b < size; b++ {
			if word&(1<<b) != 0 {
				continue
			}
			ip := fromU32(p.first + uint32(w*64+b))
			if toU32(ip) == p.gateway || (also != nil && also(ip)) {
				continue
			}
			return ip, nil
		}
	}
	return nil, fmt.Errorf("%w: all %d addresses of %s are in use", ErrExhausted, p.Size(), p.cidr)
}

func (p Pool) offset(ip net.IP) (int, bool) {
	v4 := ip.To4()
	if v4 == nil {
		return 0, false
	}
	u := toU32(v4)
	if u < p.first || u > p.last {
		return 0, false
	}
	return int(u - p.first), true
}
