package membership

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// SecretKeySize is the gossip key length: AES-256.
const SecretKeySize = 32

// ErrInvalidConfig is returned by New for an unusable Config.
var ErrInvalidConfig = errors.New("invalid membership config")

// LAN failure-detection defaults. They start from memberlist.DefaultLANConfig
// (probe every 1 s, 500 ms probe timeout, SuspicionMult 4,
// SuspicionMaxTimeoutMult 6: a dead node is declared after ~5-6 s and up to
// 24 s) and shorten it so a dead node is declared within ~2-3 s.
//
// The math, for clusters under 10 nodes (memberlist scales the suspicion
// timeout by max(1, log10(n)), so 1 here; ~1.3 at 20 nodes, 2 at 100):
//
//   - Probing: each node probes one peer per ProbeInterval, round-robin over
//     a shuffled list, so with s survivors in an n-node cluster the dead node
//     is first probed after about ProbeInterval·(n-1)/(s+1) on average
//     (≈ 0.27 s for n = 3) and at most ProbeInterval·(n-1).
//   - That probe fails after one ProbeInterval (direct ping for ProbeTimeout,
//     then indirect pings and a TCP ping until the interval ends): the node
//     is now suspect, ≈ 0.4-1.2 s after death.
//   - Suspicion: min = SuspicionMult·ProbeInterval = 1.2 s. The timer starts
//     at max = SuspicionMaxTimeoutMult·min = 3.6 s and falls to min once
//     k = SuspicionMult-2 = 1 other node independently confirms the
//     suspicion (k is 0, so min, in 2-node clusters).
//   - Reporting: a departure with no leave announcement is reported as Fail
//     one GossipInterval (0.2 s) later (see delegate.NotifyLeave).
//   - Total: ≈ 0.27 + 0.4 + 1.2 + 0.2 ≈ 2.1 s typical, ~2.6 s worst with a
//     prompt confirmation, ~5 s if no other node confirms.
//
// ProbeTimeout 200 ms is generous for a LAN round trip (<1 ms) and leaves
// time for indirect probes; suspicion plus Lifeguard's refutation and
// awareness keep a briefly slow but alive node from being declared dead.
const (
	DefaultProbeInterval           = 400 * time.Millisecond
	DefaultProbeTimeout            = 200 * time.Millisecond
	DefaultSuspicionMult           = 3
	DefaultSuspicionMaxTimeoutMult = 3
	DefaultGossipInterval          = 200 * time.Millisecond
	DefaultEventBuffer             = 256
	DefaultTCPTimeout              = 5 * time.Second
)

// Config configures a Membership.
type Config struct {
	// Name is this node's unique name in the cluster. Required.
	Name string
	// BindAddr is the IP to listen on for gossip (UDP and TCP); empty means
	// 0.0.0.0.
	BindAddr string
	// BindPort is the gossip port; 0 lets the kernel pick one (see
	// Membership.LocalAddr).
	BindPort int
	// AdvertiseAddr is the IP other nodes use to reach this one; empty means
	// BindAddr, or a private IP of the host when BindAddr is 0.0.0.0.
	AdvertiseAddr string
	// SecretKey is the 32-byte AES-256 cluster gossip key (NewSecretKey).
	// Required: every gossip packet and stream is encrypted and unencrypted
	// traffic is refused.
	SecretKey []byte
	// Meta returns the local node's meta. memberlist calls it on start and
	// on UpdateMeta, from its own goroutines: it must be cheap and do no I/O.
	// Nil gossips an empty meta.
	Meta func() Meta
	// Logger receives memberlist's logs as component=gossip; nil means
	// slog.Default().
	Logger *slog.Logger

	// ProbeInterval is how often each node probes one random peer.
	// Zero means DefaultProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for an ack before
	// indirect probes start; it must be less than ProbeInterval.
	// Zero means DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// SuspicionMult scales the suspicion timeout (SuspicionMult ·
	// ProbeInterval · max(1, log10(n))). Zero means DefaultSuspicionMult.
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the unconfirmed suspicion timeout as a
	// multiple of the minimum. Zero means DefaultSuspicionMaxTimeoutMult.
	SuspicionMaxTimeoutMult int
	// GossipInterval is how often state changes are gossiped to a few
	// random peers. Zero means DefaultGossipInterval.
	GossipInterval time.Duration
	// TCPTimeout bounds each push/pull stream, including Join attempts.
	// Zero means DefaultTCPTimeout.
	TCPTimeout time.Duration
	// EventBuffer is the capacity of the Events channel. Zero means
	// DefaultEventBuffer.
	EventBuffer int
}

// NewSecretKey returns a random 32-byte gossip key.
func NewSecretKey() ([]byte, error) {
	k := make([]byte, SecretKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate gossip key: %w", err)
	}
	return k, nil
}

// withDefaults validates c and fills zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		return c, fmt.Errorf("%w: Name is required", ErrInvalidConfig)
	}
	if len(c.SecretKey) != SecretKeySize {
		return c, fmt.Errorf("%w: SecretKey must be %d bytes (AES-256), got %d",
			ErrInvalidConfig, SecretKeySize, len(c.SecretKey))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		return c, fmt.Errorf("%w: BindPort %d out of range", ErrInvalidConfig, c.BindPort)
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0"
	}
	if c.Meta == nil {
		c.Meta = func() Meta { return Meta{} }
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	setDefault(&c.ProbeInterval, DefaultProbeInterval)
	setDefault(&c.ProbeTimeout, DefaultProbeTimeout)
	setDefault(&c.SuspicionMult, DefaultSuspicionMult)
	setDefault(&c.SuspicionMaxTimeoutMult, DefaultSuspicionMaxTimeoutMult)
	setDefault(&c.GossipInterval, DefaultGossipInterval)
	setDefault(&c.TCPTimeout, DefaultTCPTimeout)
	setDefault(&c.EventBuffer, DefaultEventBuffer)
	if c.ProbeTimeout >= c.ProbeInterval {
		return c, fmt.Errorf("%w: ProbeTimeout %v must be less than ProbeInterval %v",
			ErrInvalidConfig, c.ProbeTimeout, c.ProbeInterval)
	}
	if c.SuspicionMult < 1 || c.SuspicionMaxTimeoutMult < 1 || c.EventBuffer < 1 {
		return c, fmt.Errorf("%w: SuspicionMult, SuspicionMaxTimeoutMult and EventBuffer must be positive", ErrInvalidConfig)
	}
	return c, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// memberlistConfig derives memberlist's config from DefaultLANConfig.
func (c Config) memberlistConfig(d *delegate) (*memberlist.Config, error) {
	keyring, err := memberlist.NewKeyring(nil, c.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Name
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.BindPort
	mc.Keyring = keyring
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = c.SuspicionMaxTimeoutMult
	mc.GossipInterval = c.GossipInterval
	mc.TCPTimeout = c.TCPTimeout
	mc.Delegate = d
	mc.Events = d
	mc.Conflict = d
	mc.Logger = newGossipLogger(c.Logger, &d.m.stopping)
	return mc, nil
}
