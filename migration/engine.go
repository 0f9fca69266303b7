package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/internal/failpoint"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/storage"
)

// Sentinels callers branch on; the API maps each to one gRPC code.
var (
	// ErrAborted: the other side gave the transfer up (or never committed
	// it); nothing of it is left here.
	ErrAborted = errors.New("transfer aborted")
	// ErrUnsupported: this host, the other side or the container cannot do
	// what was asked (no CRIU, no lazy pages, another protocol version).
	ErrUnsupported = errors.New("transfer not supported")
	// ErrConflict: the container is not in the state the transfer needs
	// (already owned here, a refresh of a running copy).
	ErrConflict = errors.New("transfer conflicts with the container's state")
	// ErrInvalid: a malformed stream (no header first, an unexpected part).
	ErrInvalid = errors.New("invalid transfer stream")
	// ErrExists: a copy's name is taken.
	ErrExists = errors.New("container exists")
)

// marked is an error that reads as its own message and matches a
// sentinel: the sentinel's text stays out of what users read.
type marked struct {
	kind error
	msg  string
}

func (e *marked) Error() string        { return e.msg }
func (e *marked) Is(target error) bool { return target == e.kind }

// mark returns an error reading format, args that matches kind.
func mark(kind error, format string, args ...any) error {
	return &marked{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Volumes is the host's storage seen by transfers.
type Volumes interface {
	// Pool returns a storage pool's driver.
	Pool(name string) (storage.Driver, error)
	// VolumeName is the volume a container's root lives on.
	VolumeName(container string) string
	// CopyVolume clones a container's volume (and the named snapshots)
	// into a new container's volume on this host.
	CopyVolume(ctx context.Context, src *shoalv1.Container, dst string, snaps []string) error
	// RemoveStale deletes what a failed copy left under a name the
	// cluster does not know.
	RemoveStale(ctx context.Context, name string) error
	// DropLocal removes this host's copy of a container (definition and
	// volume) unless this host owns it.
	DropLocal(ctx context.Context, name string) error
	// KeepAsReplica turns this host's stale copy of a container healed
	// elsewhere into its replica when the cluster records this host as
	// holding one; otherwise it does nothing.
	KeepAsReplica(ctx context.Context, name string) error
	// Reconcile makes this host match the cluster's record of a container.
	Reconcile(ctx context.Context, name string) error
	// CustomVolumeName is the volume a custom storage volume lives on.
	CustomVolumeName(name string) string
	// DropCustomVolume deletes this host's copy of a custom volume unless
	// the cluster places it on this host.
	DropCustomVolume(ctx context.Context, pool, name string) error
}

// Checkpointer is the host's process-state side of a live move's source.
type Checkpointer interface {
	// CanCheckpoint reports why this host cannot checkpoint (nil: it can).
	CanCheckpoint(ctx context.Context) error
	// CanPostCopy reports whether this host can restore ct with lazy pages.
	CanPostCopy(ct *shoalv1.Container) bool
	// CanPreCopy reports whether this host tracks dirty memory.
	CanPreCopy() bool
	// MemoryBytes is the memory a running container uses.
	MemoryBytes(ctx context.Context, ct *shoalv1.Container) int64
	// HoldForMove keeps reconciles off a container until release.
	HoldForMove(name string) (release func())
	// StopHeld stops a container a move holds, leaving its record as it
	// is (a daemon that dies meanwhile finds it still desired running).
	StopHeld(ctx context.Context, name string) error
	// Freeze and Thaw freeze and thaw a local container.
	Freeze(ctx context.Context, name string) error
	Thaw(ctx context.Context, name string) error
	// NewCheckpointDir returns a fresh path for a checkpoint.
	NewCheckpointDir(name string) (string, error)
	// Checkpoint dumps a frozen container into dir; it stays frozen.
	Checkpoint(ctx context.Context, name, dir string) error
	// StartLazyCheckpoint dumps a frozen container without its memory and
	// serves the pages on addr:port to whoever holds the keys returned.
	StartLazyCheckpoint(ctx context.Context, name, dir, addr string, port int) (PageServer, *shoalv1.PageServerKeys, error)
}

// Restorer is the host's side of a live move's target.
type Restorer interface {
	// StartLazyPages starts feeding a post-copy restore from a page server.
	StartLazyPages(ctx context.Context, dir, addr string, port int, keys *shoalv1.PageServerKeys) (LazyPages, error)
	// RestoreIncoming restores, frozen, a container another member owns.
	RestoreIncoming(ctx context.Context, ct *shoalv1.Container, dir string, lazy bool) error
	// CommitIncoming thaws it once the cluster shows this host as owner,
	// waiting up to wait.
	CommitIncoming(ctx context.Context, name string, wait time.Duration) error
	// AbortIncoming removes an uncommitted incoming copy.
	AbortIncoming(ctx context.Context, name string) error
	// RebootFresh boots an owned container from its volume again.
	RebootFresh(ctx context.Context, name string) error
}

// Host is what transfers need of the member they run on.
type Host interface {
	// Name is the member's name; Address its cluster address (host:port).
	Name() string
	Address() string
	Volumes
	Checkpointer
	Restorer
}

// PageServer is CRIU serving a lazy dump's memory pages (post-copy source).
type PageServer interface {
	// Abort stops serving pages.
	Abort()
	// Wait waits, up to d, until the target has pulled every page.
	Wait(d time.Duration) error
}

// LazyPages is the daemon feeding a post-copy restore (target).
type LazyPages interface {
	// Abort stops it.
	Abort()
	// Done is closed when it ends; Err then says why (nil: every page came).
	Done() <-chan struct{}
	Err() error
}

// Cluster is the Raft state transfers read and commit to.
type Cluster interface {
	// Propose commits one command.
	Propose(ctx context.Context, cmd proto.Message) error
	// Sync brings this member's view up to the leader's.
	Sync(ctx context.Context) error
	// Container reads a container's record from this member's view.
	Container(name string) (*shoalv1.Container, error)
	// Volume reads a custom volume's record (with its users).
	Volume(pool, name string) (*shoalv1.StorageVolume, error)
}

// RestoreClient is the source's end of a RestoreContainer stream.
type RestoreClient interface {
	Send(*shoalv1.RestoreContainerRequest) error
	Recv() (*shoalv1.RestoreContainerResponse, error)
	CloseSend() error
}

// VolumeClient is the sender's end of a ReceiveVolume stream.
type VolumeClient interface {
	Send(*shoalv1.ReceiveVolumeRequest) error
	CloseAndRecv() (*shoalv1.ReceiveVolumeResponse, error)
}

// Peers opens transfer streams to other members. A stream ends when ctx
// is done.
type Peers interface {
	RestoreContainer(ctx context.Context, member string) (RestoreClient, error)
	ReceiveVolume(ctx context.Context, member string) (VolumeClient, error)
}

// RestoreServer is the target's end of a RestoreContainer stream.
type RestoreServer interface {
	Context() context.Context
	Recv() (*shoalv1.RestoreContainerRequest, error)
	Send(*shoalv1.RestoreContainerResponse) error
}

// VolumeServer is the receiver's end of a ReceiveVolume stream.
type VolumeServer interface {
	Context() context.Context
	Recv() (*shoalv1.ReceiveVolumeRequest, error)
	SendAndClose(*shoalv1.ReceiveVolumeResponse) error
}

// Progress receives a transfer's progress: a phase as users read it, and
// counts (total -1 when unknown).
type Progress interface {
	Phase(phase string)
	Set(phase string, done, total int64, unit string)
}

// Events receives lifecycle events ("container-moved").
type Events interface {
	Lifecycle(node, action, resource string)
}

// Deps is what a Source or Target is built from.
type Deps struct {
	Host    Host
	Cluster Cluster
	// Peers reaches other members (nil on a member outside a cluster).
	Peers  Peers
	Events Events
	Log    *slog.Logger
	// Failpoint runs the failpoint armed at a name (failpoint.Hit when
	// nil); Armed reports whether one is (failpoint.Armed when nil).
	Failpoint func(name string) error
	Armed     func(name string) bool
	// OnPhase, when set, observes each phase a transfer enters.
	OnPhase func(kind Kind, phase Phase)
}

// engine is what both sides share: the member's parts.
type engine struct {
	host   Host
	cl     Cluster
	peers  Peers
	events Events
	log    *slog.Logger
	hit    func(string) error
	armed  func(string) bool
	phase  func(Kind, Phase)
}

// Source is the side a transfer starts on: the member that owns the
// container runs its moves, copies and refreshes; any member plans an
// evacuation (each move runs on its container's owner).
type Source struct{ *engine }

// Target is the side a transfer arrives on: the member-to-member RPC
// handlers hand it their streams.
type Target struct{ *engine }

// NewSource returns the sending side over deps.
func NewSource(deps Deps) *Source { return &Source{newEngine(deps)} }

// NewTarget returns the receiving side over deps.
func NewTarget(deps Deps) *Target { return &Target{newEngine(deps)} }

func newEngine(deps Deps) *engine {
	e := &engine{host: deps.Host, cl: deps.Cluster, peers: deps.Peers, events: deps.Events,
		log: deps.Log, hit: deps.Failpoint, armed: deps.Armed, phase: deps.OnPhase}
	if e.log == nil {
		e.log = slog.Default()
	}
	e.log = e.log.With("component", "migration")
	if e.hit == nil {
		e.hit = failpoint.Hit
	}
	if e.armed == nil {
		e.armed = failpoint.Armed
	}
	return e
}

// noProgress drops reports.
type noProgress struct{}

func (noProgress) Phase(string)                     {}
func (noProgress) Set(string, int64, int64, string) {}

func orNop(p Progress) Progress {
	if p == nil {
		return noProgress{}
	}
	return p
}

// lookup reads a container's record, confirming a miss with the leader.
func (e *engine) lookup(ctx context.Context, name string) (*shoalv1.Container, error) {
	ct, err := e.cl.Container(name)
	if err != nil && e.cl.Sync(ctx) == nil {
		ct, err = e.cl.Container(name)
	}
	return ct, err
}

// record is lookup for a name a stream announced.
func (e *engine) record(ctx context.Context, name string) (*shoalv1.Container, error) {
	if name == "" {
		return nil, mark(ErrInvalid, "name: a container name is required")
	}
	return e.lookup(ctx, name)
}
