package cluster

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// The read accessors return copies: callers may keep and change them freely.

// Container returns a container by name.
func (f *FSM) Container(name string) (*shoalv1.Container, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	ct, err := f.s.container(name)
	if err != nil {
		return nil, err
	}
	return proto.Clone(ct).(*shoalv1.Container), nil
}

// Containers returns all containers sorted by name.
func (f *FSM) Containers() []*shoalv1.Container {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.Container, 0, len(f.s.containers))
	for _, k := range sortedKeys(f.s.containers) {
		out = append(out, proto.Clone(f.s.containers[k]).(*shoalv1.Container))
	}
	return out
}

// Images returns all images, with their aliases, sorted by fingerprint.
func (f *FSM) Images() []*shoalv1.Image {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.Image, 0, len(f.s.images))
	for _, k := range sortedKeys(f.s.images) {
		out = append(out, f.imageLocked(k))
	}
	return out
}

func (f *FSM) imageLocked(fp string) *shoalv1.Image {
	img := proto.Clone(f.s.images[fp]).(*shoalv1.Image)
	for _, a := range sortedKeys(f.s.aliases) {
		if f.s.aliases[a] == fp {
			img.Aliases = append(img.Aliases, a)
		}
	}
	return img
}

// ResolveImage finds an image by alias, full fingerprint, or unique
// fingerprint prefix.
func (f *FSM) ResolveImage(ref string) (*shoalv1.Image, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if fp, ok := f.s.aliases[ref]; ok {
		return f.imageLocked(fp), nil
	}
	if ref == "" {
		return nil, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	var match []string
	for fp := range f.s.images {
		if strings.HasPrefix(fp, ref) {
			match = append(match, fp)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("image %q: %w", ref, ErrNotFound)
	case 1:
		return f.imageLocked(match[0]), nil
	}
	sort.Strings(match)
	return nil, fmt.Errorf("image %q is ambiguous (%d images match)", ref, len(match))
}

// ImageUsers returns the names of containers created from image fp.
func (f *FSM) ImageUsers(fp string) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for _, k := range sortedKeys(f.s.containers) {
		if f.s.containers[k].GetImageFingerprint() == fp {
			out = append(out, k)
		}
	}
	return out
}

// Pools returns all storage pools sorted by name.
func (f *FSM) Pools() []*shoalv1.StoragePool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.StoragePool, 0, len(f.s.pools))
	for _, k := range sortedKeys(f.s.pools) {
		out = append(out, proto.Clone(f.s.pools[k]).(*shoalv1.StoragePool))
	}
	return out
}

// Pool returns a storage pool by name.
func (f *FSM) Pool(name string) (*shoalv1.StoragePool, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.s.pools[name]
	if !ok {
		return nil, fmt.Errorf("storage pool %q: %w", name, ErrNotFound)
	}
	return proto.Clone(p).(*shoalv1.StoragePool), nil
}

// Networks returns all managed networks sorted by name.
func (f *FSM) Networks() []*shoalv1.Network {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.Network, 0, len(f.s.networks))
	for _, k := range sortedKeys(f.s.networks) {
		out = append(out, proto.Clone(f.s.networks[k]).(*shoalv1.Network))
	}
	return out
}

// Network returns a network by name.
func (f *FSM) Network(name string) (*shoalv1.Network, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.s.networks[name]
	if !ok {
		return nil, fmt.Errorf("network %q: %w", name, ErrNotFound)
	}
	return proto.Clone(n).(*shoalv1.Network), nil
}

// CheckNetwork reports whether a NetworkCreateCommand for n would be
// refused now (a name, VNI or subnet clash), with the same error.
func (f *FSM) CheckNetwork(n *shoalv1.Network) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if _, ok := f.s.networks[n.GetName()]; ok {
		return fmt.Errorf("network %q: %w", n.GetName(), ErrExists)
	}
	return f.s.checkNetwork(n)
}

// Nodes returns all nodes sorted by name.
func (f *FSM) Nodes() []*shoalv1.Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.Node, 0, len(f.s.nodes))
	for _, k := range sortedKeys(f.s.nodes) {
		out = append(out, proto.Clone(f.s.nodes[k]).(*shoalv1.Node))
	}
	return out
}

// Node returns a node by name.
func (f *FSM) Node(name string) (*shoalv1.Node, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.s.nodes[name]
	if !ok {
		return nil, fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	return proto.Clone(n).(*shoalv1.Node), nil
}

// Identity returns the cluster identity, or nil before bootstrap.
func (f *FSM) Identity() *shoalv1.ClusterIdentity {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.s.identity == nil {
		return nil
	}
	return proto.Clone(f.s.identity).(*shoalv1.ClusterIdentity)
}

// Token returns a pending join token, or nil when there is none.
func (f *FSM) Token(name string) *shoalv1.TokenAddCommand {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if t, ok := f.s.tokens[name]; ok {
		return proto.Clone(t).(*shoalv1.TokenAddCommand)
	}
	return nil
}

// Tokens returns the pending join tokens, by name.
func (f *FSM) Tokens() []*shoalv1.TokenAddCommand {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.TokenAddCommand, 0, len(f.s.tokens))
	for _, k := range sortedKeys(f.s.tokens) {
		out = append(out, proto.Clone(f.s.tokens[k]).(*shoalv1.TokenAddCommand))
	}
	return out
}

// Trust returns the trust store's entry for a certificate fingerprint, or
// nil when the cluster never issued it. Entries are immutable (Apply
// replaces them), so it is shared, not copied: the caller must not modify
// it. It is on every authenticated call's path.
func (f *FSM) Trust(fingerprint string) *shoalv1.TrustEntry {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.s.trust[fingerprint]
}

// TrustEntries returns the whole trust store, by fingerprint.
func (f *FSM) TrustEntries() []*shoalv1.TrustEntry {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*shoalv1.TrustEntry, 0, len(f.s.trust))
	for _, k := range sortedKeys(f.s.trust) {
		out = append(out, proto.Clone(f.s.trust[k]).(*shoalv1.TrustEntry))
	}
	return out
}

// Revoked reports whether the trust store revoked the certificate.
func (f *FSM) Revoked(fingerprint string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	e, ok := f.s.trust[fingerprint]
	return ok && e.GetRevoked()
}

// ClusterConfig returns the cluster-wide config keys.
func (f *FSM) ClusterConfig() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return cloneMap(f.s.config)
}
