package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/hashicorp/memberlist"
)

// MetaVersion is the meta encoding this package writes. Decoders accept any
// version ≥ 1 and ignore fields they do not know, so newer nodes can add
// fields without breaking older ones.
const MetaVersion = 1

// MetaMaxSize is memberlist's limit on encoded node meta, in bytes.
const MetaMaxSize = memberlist.MetaMaxSize

// ErrMetaTooLarge is returned when a node's encoded meta exceeds MetaMaxSize.
var ErrMetaTooLarge = errors.New("node meta exceeds gossip limit")

// ErrBadMeta is returned when gossiped meta cannot be decoded.
var ErrBadMeta = errors.New("malformed node meta")

// Meta is what each node gossips about itself. It must encode to at most
// MetaMaxSize bytes (see EncodeMeta); keep labels few and short.
type Meta struct {
	// Name is the node name. It travels in memberlist's own header, not in
	// the encoded meta, and is filled in from it on decode.
	Name string
	// GRPCAddr is the host:port of the node's gRPC API.
	GRPCAddr string
	// RaftAddr is the host:port of the node's Raft transport.
	RaftAddr string
	// FreeCPUMillis is the CPU not yet reserved on the node, in millicores.
	FreeCPUMillis int64
	// FreeMemoryBytes is the memory not yet reserved on the node.
	FreeMemoryBytes int64
	// Labels are operator-set node labels used by placement.
	Labels map[string]string
	// FreeDiskBytes is the free space of each storage pool on the node,
	// by pool name (where a replica of a container on that pool lands).
	FreeDiskBytes map[string]int64
	// Version is the meta encoding version; zero means MetaVersion when
	// encoding.
	Version int
	// Leaving is set by Membership.Leave while the node departs gracefully;
	// it is ignored in what Config.Meta returns.
	Leaving bool
}

// wireMeta is the JSON form, with short keys to stay well under 512 bytes.
type wireMeta struct {
	V int               `json:"v"`
	G string            `json:"g,omitempty"`
	R string            `json:"r,omitempty"`
	C int64             `json:"c,omitempty"`
	M int64             `json:"m,omitempty"`
	L map[string]string `json:"l,omitempty"`
	D map[string]int64  `json:"d,omitempty"`
	X bool              `json:"x,omitempty"`
}

// EncodeMeta encodes m for gossip. It returns an error wrapping
// ErrMetaTooLarge if the result exceeds MetaMaxSize.
func EncodeMeta(m Meta) ([]byte, error) {
	v := m.Version
	if v == 0 {
		v = MetaVersion
	}
	b, err := json.Marshal(wireMeta{V: v, G: m.GRPCAddr, R: m.RaftAddr,
		C: m.FreeCPUMillis, M: m.FreeMemoryBytes, L: m.Labels, D: m.FreeDiskBytes, X: m.Leaving})
	if err != nil {
		return nil, fmt.Errorf("encode meta for %q: %w", m.Name, err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("meta for %q is %d bytes, limit %d (%d labels): %w",
			m.Name, len(b), MetaMaxSize, len(m.Labels), ErrMetaTooLarge)
	}
	return b, nil
}

// DecodeMeta decodes meta gossiped by node name. Empty input gives a Meta
// with only Name set.
func DecodeMeta(name string, b []byte) (Meta, error) {
	if len(b) == 0 {
		return Meta{Name: name}, nil
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{Name: name}, fmt.Errorf("decode meta of %q: %w: %w", name, ErrBadMeta, err)
	}
	if w.V < 1 {
		return Meta{Name: name}, fmt.Errorf("decode meta of %q: version %d: %w", name, w.V, ErrBadMeta)
	}
	return Meta{Name: name, GRPCAddr: w.G, RaftAddr: w.R, FreeCPUMillis: w.C,
		FreeMemoryBytes: w.M, Labels: w.L, FreeDiskBytes: w.D, Version: w.V, Leaving: w.X}, nil
}

// clone returns a deep copy of m.
func (m Meta) clone() Meta {
	m.Labels = maps.Clone(m.Labels)
	m.FreeDiskBytes = maps.Clone(m.FreeDiskBytes)
	return m
}
