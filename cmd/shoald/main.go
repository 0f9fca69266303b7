// Command shoald is the Shoal daemon: one per host. With no flags it runs a
// one-node cluster with a btrfs pool on a loop file and the bridge shoalbr0;
// with --listen it serves other members and remote clients over mutual TLS,
// and with --join it joins an existing cluster.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/api"
	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/cluster/ha"
	"github.com/shoal-dev/shoal/cluster/membership"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/images"
	"github.com/shoal-dev/shoal/node/metrics"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
	"github.com/shoal-dev/shoal/scheduler"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "shoald:", err)
		os.Exit(1)
	}
}

type labelFlag map[string]string

func (l labelFlag) String() string { return fmt.Sprint(map[string]string(l)) }
func (l labelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY=VALUE", v)
	}
	l[k] = val
	return nil
}

func run() error {
	host, _ := os.Hostname()
	labels := labelFlag{}
	var (
		stateDir    = flag.String("state-dir", "/var/lib/shoal", "directory for all daemon state")
		name        = flag.String("name", host, "this node's name")
		socket      = flag.String("socket", "", "gRPC unix socket, the local admin path (default STATE-DIR/shoal.socket)")
		restSocket  = flag.String("rest-socket", "", "REST unix socket, the same access (default STATE-DIR/rest.socket)")
		adminGroup  = flag.String("admin-group", "shoal-admin", "group whose members may use the local sockets (mode 0660; root only when the group does not exist)")
		listen      = flag.String("listen", "", "HOST:PORT for members and remote clients: gRPC and REST over mutual TLS; needed to form a cluster")
		raftAddr    = flag.String("raft-addr", "", "Raft transport address, mutual TLS (default: --listen's port + 1, or 127.0.0.1 on a free port)")
		gossipAddr  = flag.String("gossip-addr", "", "gossip (memberlist) address (default: --listen's port + 2)")
		offline     = flag.Duration("offline-after", 5*time.Second, "how long gossip must see a member dead before it is marked offline")
		join        = flag.String("join", "", "join the cluster a token (from `shoal cluster add`) names: @FILE or - (stdin) to read it, or set SHOAL_JOIN_TOKEN; a token written here is readable by every local user in /proc")
		clusterName = flag.String("cluster-name", "shoal", "name of a new cluster")
		maxVoters   = flag.Int("max-voters", 3, "Raft voters to keep (3 or 5) unless cluster.max_voters is set; other members are standbys")
		strategy    = flag.String("scheduler", "spread", "placement strategy unless cluster.scheduler is set: spread (least loaded) or binpack")
		bridge      = flag.String("bridge", "", "name of the default network a new cluster creates (default: shoalnet0, an overlay, with --listen; shoalbr0, a bridge, without)")
		bridgeCIDR  = flag.String("bridge-cidr", "auto", "address/prefix of the default network, or auto")
		poolDriver  = flag.String("pool-driver", "btrfs", "driver of the default storage pool: btrfs or dir")
		poolSource  = flag.String("pool-source", "", "existing btrfs mount or directory for the default pool (empty: a loop file / a directory under the state dir)")
		poolSize    = flag.String("pool-size", "", "size of the default pool's loop file (default: a fifth of free space, 5-30GiB)")
		imageCache  = flag.String("image-cache", images.DefaultDebianCacheDir, "cache for slow image builds (debootstrap)")
		logLevel    = flag.String("log-level", "info", "debug, info, warn or error")
		logFormat   = flag.String("log-format", "text", "text (key=value) or json (one object per line)")
		pruneEvery  = flag.Duration("snapshot-prune-interval", time.Minute, "how often expired snapshots (snapshots.expiry, snapshot create --expiry) are deleted")
		metricsAddr = flag.String("metrics-addr", "", "HOST:PORT of an HTTPS listener serving only /metrics to holders of a trusted certificate (/metrics is on --listen and the REST socket too)")
	)
	flag.Var(labels, "label", "node label KEY=VALUE for scheduler constraints (repeatable)")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %q (allowed: debug, info, warn, error)", *logLevel)
	}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	case "json":
		log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	default:
		return fmt.Errorf("--log-format: %q (allowed: text, json)", *logFormat)
	}
	// The daemon's log is also an event stream (shoal monitor --type logging).
	bus := operations.NewBus()
	log = slog.New(operations.LogHandler(log.Handler(), bus, *name))
	if err := config.ValidateName("--name", *name); err != nil {
		return err
	}
	if err := readJoinToken(join, log); err != nil {
		return err
	}
	strat, err := scheduler.ParseStrategy(*strategy)
	if err != nil {
		return fmt.Errorf("--scheduler: %w", err)
	}
	if *maxVoters != 3 && *maxVoters != 5 {
		return fmt.Errorf("--max-voters: %d (allowed: 3, 5)", *maxVoters)
	}
	var size int64
	if *poolSize != "" {
		var err error
		if size, err = config.ParseSize(*poolSize); err != nil {
			return fmt.Errorf("--pool-size: %q: %v", *poolSize, err)
		}
	}
	if *socket == "" {
		*socket = filepath.Join(*stateDir, "shoal.socket")
	}
	if *restSocket == "" {
		*restSocket = filepath.Join(*stateDir, "rest.socket")
	}
	if *join != "" && *listen == "" {
		return fmt.Errorf("--join needs --listen HOST:PORT (where the other members reach this node)")
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	if *listen != "" {
		h, p, err := net.SplitHostPort(*listen)
		ip := net.ParseIP(h)
		if err != nil || ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("--listen: %q must be IP:PORT with the address other members dial", *listen)
		}
		ips = append(ips, ip)
		port, _ := strconv.Atoi(p)
		if *raftAddr == "" {
			*raftAddr = net.JoinHostPort(h, strconv.Itoa(port+1))
		}
		if *gossipAddr == "" {
			*gossipAddr = net.JoinHostPort(h, strconv.Itoa(port+2))
		}
	}
	if *raftAddr == "" {
		*raftAddr = "127.0.0.1:0"
	}
	if err := os.MkdirAll(*stateDir, 0o711); err != nil {
		return err
	}

	// SIGINT or SIGTERM stops the daemon; once the API is up, beforeStop
	// runs first (cluster.shutdown=evacuate), unless a second signal comes.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var beforeStop atomic.Pointer[func()]
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		if f := beforeStop.Load(); f != nil {
			done := make(chan struct{})
			go func() { (*f)(); close(done) }()
			select {
			case <-done:
			case <-sigs:
				log.Warn("a second signal: stopping without waiting for the evacuation")
			}
		}
		stop()
	}()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	// Identity: join with a token, or be the first member of a new cluster.
	pkiDir := filepath.Join(*stateDir, "pki")
	joined := *join != "" || (cluster.HasCredentials(pkiDir) && !fileExists(filepath.Join(pkiDir, "ca.key")))
	if *join != "" && !cluster.HasCredentials(pkiDir) {
		log.Info("joining the cluster", "node", *name)
		if _, _, err := cluster.Join(startCtx, cluster.JoinParams{
			Token: *join, Name: *name, Address: *listen, RaftAddress: *raftAddr, GossipAddress: *gossipAddr,
			CPUMillis: int64(runtime.NumCPU()) * 1000, MemoryBytes: config.HostMemory(), Labels: labels, IPs: ips, Dir: pkiDir,
		}); err != nil {
			return err
		}
	}
	if !joined {
		if _, err := cluster.PrepareBootstrap(pkiDir, *clusterName, *name, ips, time.Now()); err != nil {
			return fmt.Errorf("cluster identity: %w", err)
		}
	}
	creds, err := cluster.LoadCredentials(pkiDir)
	if err != nil {
		return err
	}
	// Raft reports its timings through go-metrics' global sink from its
	// first entry on.
	raftSink := metrics.NewRaftSink()
	if err := metrics.InstallRaftSink(raftSink); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	raftServer, raftClient := creds.RaftTLS()
	cl, err := cluster.Open(startCtx, cluster.Config{NodeName: *name, DataDir: filepath.Join(*stateDir, "raft"), BindAddr: *raftAddr,
		ServerTLS: raftServer, ClientTLS: raftClient, Join: joined, Logger: log})
	if err != nil {
		return err
	}
	defer cl.Close()
	peers := api.ConnectPeers(cl, creds)
	defer peers.Close()
	if joined {
		if err := cl.WaitLeader(startCtx); err != nil {
			return err
		}
	} else if err := cl.InitIdentity(startCtx, pkiDir); err != nil {
		return err
	}

	if *bridge == "" {
		*bridge = "shoalbr0"
		if *listen != "" {
			*bridge = "shoalnet0"
		}
	}
	n, err := node.New(startCtx, node.Config{
		Name: *name, StateDir: *stateDir,
		DefaultPool: node.PoolConfig{Name: "default", Driver: *poolDriver, Source: *poolSource, Size: size},
		Bridge:      *bridge, BridgeCIDR: *bridgeCIDR, ImageCacheDir: *imageCache,
		Address: *listen, RaftAddress: cl.Addr(), GossipAddress: *gossipAddr, Labels: labels, Logger: log,
		FetchImage: peers.FetchImage,
	}, cl, bus)
	if err != nil {
		return err
	}
	defer n.Close()
	n.Run(ctx)
	ops := operations.NewRegistry(bus, *name)
	msrc := &metricsSource{n: n, cl: cl, ops: ops}
	go cl.RunAutopilot(ctx, *maxVoters, time.Second, peers.Healthy)
	if *gossipAddr != "" {
		gossip, err := startGossip(startCtx, cl, creds, *name, *listen, *gossipAddr, labels, n.PoolsFree, log)
		if err != nil {
			return err
		}
		// A clean shutdown leaves gossip first: the others record this node
		// as stopped, never as failed.
		defer func() { gossip.Leave(2 * time.Second); gossip.Shutdown() }()
		msrc.gossip.Store(gossip)
		go cl.RunLiveness(ctx, gossip.Members, *offline, 500*time.Millisecond)
	}

	srv := api.NewServer(cl, n, peers, ops, bus, log)
	srv.SetStrategy(strat)
	l, err := api.Listen(ctx, srv, api.Endpoints{Socket: *socket, RESTSocket: *restSocket, AdminGroup: *adminGroup,
		Listen: *listen, TLS: creds.ServerTLS(), Metrics: metricsRegistry(msrc, raftSink), MetricsListen: *metricsAddr})
	if err != nil {
		return err
	}
	defer l.Close()
	go srv.EnsureTrusted(ctx, creds.Cert.Leaf)
	rep := &ha.Replicator{Self: *name, View: cl.FSM(), Host: n, Send: srv.Replicate, Propose: cl.Propose,
		Fits: cl.FSM().Fits, Disk: ha.DiskRoom(gossipPoolFree(&msrc.gossip), n.DiskUsage), Log: log.With("component", "ha")}
	go rep.Run(ctx)
	go srv.RunImageUpdates(ctx)
	go srv.RunSnapshots(ctx, *pruneEvery)
	event := func(action, resource string) { bus.Lifecycle(*name, action, resource) }
	go (&ha.Fencer{Self: *name, Contact: cl.QuorumContact, Ready: cl.Sync, View: cl.FSM(), Host: n, Event: event,
		Log: log.With("component", "ha")}).Run(ctx)
	go (&ha.Healer{IsLeader: cl.IsLeader, View: cl.FSM(), Propose: cl.Propose,
		Event: func(action, resource, detail string) { bus.LifecycleDetail(*name, action, resource, detail) },
		Log:   log.With("component", "ha")}).Run(ctx)
	evacuate := func() { evacuateOnShutdown(cl, srv, *name, log) }
	beforeStop.Store(&evacuate)
	log.Info("shoald ready", "node", *name, "socket", *socket, "rest-socket", l.Addr("rest-socket"), "listen", l.Addr("listen"), "metrics", l.Addr("metrics"), "raft", cl.Addr())

	select {
	case <-ctx.Done():
		log.Info("shutting down; containers keep running")
		return nil
	case err := <-l.Err():
		return err
	}
}

// startGossip joins the members' encrypted gossip and advertises this
// node's addresses.
func startGossip(ctx context.Context, cl *cluster.Cluster, creds *cluster.Credentials, name, listen, addr string, labels map[string]string, pools func() map[string]int64, log *slog.Logger) (*membership.Membership, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-addr: %q: %v", addr, err)
	}
	port, _ := strconv.Atoi(p)
	var metaMu sync.Mutex
	meta := membership.Meta{Name: name, GRPCAddr: listen, RaftAddr: cl.Addr(), Labels: labels}
	free := func() {
		cpu, mem := freeResources()
		disk := pools()
		metaMu.Lock()
		meta.FreeCPUMillis, meta.FreeMemoryBytes, meta.FreeDiskBytes = cpu, mem, disk
		metaMu.Unlock()
	}
	free()
	m, err := membership.New(membership.Config{Name: name, BindAddr: host, BindPort: port, SecretKey: creds.GossipKey,
		Meta: func() membership.Meta {
			metaMu.Lock()
			defer metaMu.Unlock()
			return meta
		}, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	// Free resources change: gossip them every few seconds.
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for range t.C {
			free()
			if err := m.UpdateMeta(context.Background()); err != nil {
				return
			}
		}
	}()
	var peers []string
	for _, n := range cl.FSM().Nodes() {
		if n.GetName() != name && n.GetGossipAddress() != "" {
			peers = append(peers, n.GetGossipAddress())
		}
	}
	if len(peers) > 0 {
		if _, err := m.Join(ctx, peers); err != nil {
			log.Warn("gossip: no member answered yet; they will find this node", "err", err)
		}
	}
	return m, nil
}

// freeResources reads the host's idle CPU (from the 1-minute load) and
// available memory.
// gossipPoolFree reads a member's free disk on a pool from what it last
// gossiped (false when there is no gossip, the member is not alive in it,
// or it did not say).
func gossipPoolFree(g *atomic.Pointer[membership.Membership]) func(member, pool string) (int64, bool) {
	return func(member, pool string) (int64, bool) {
		m := g.Load()
		if m == nil {
			return 0, false
		}
		for _, mb := range m.Members() {
			if mb.Name == member && mb.State == membership.StateAlive {
				free, ok := mb.Meta.FreeDiskBytes[pool]
				return free, ok
			}
		}
		return 0, false
	}
}

func freeResources() (cpuMillis, memBytes int64) {
	ncpu := int64(runtime.NumCPU())
	cpuMillis = ncpu * 1000
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if load, err := strconv.ParseFloat(f[0], 64); err == nil {
				cpuMillis = max(0, ncpu*1000-int64(load*1000))
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				memBytes = kb * 1024
			}
		}
	}
	return cpuMillis, memBytes
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// readJoinToken resolves --join: "@FILE" reads the token from a file, "-"
// from stdin, empty takes SHOAL_JOIN_TOKEN; a token given as is works but
// is logged as exposed (every local user reads /proc/PID/cmdline).
func readJoinToken(join *string, log *slog.Logger) error {
	switch {
	case *join == "":
		*join = strings.TrimSpace(os.Getenv("SHOAL_JOIN_TOKEN"))
	case *join == "-":
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
		if err != nil {
			return fmt.Errorf("--join -: read the token from stdin: %w", err)
		}
		*join = strings.TrimSpace(string(b))
		if *join == "" {
			return fmt.Errorf("--join -: stdin held no token")
		}
	case strings.HasPrefix(*join, "@"):
		path := (*join)[1:]
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--join: read the token: %w", err)
		}
		if *join = strings.TrimSpace(string(b)); *join == "" {
			return fmt.Errorf("--join: %s holds no token", path)
		}
	default:
		log.Warn("the join token is on the command line, where every local user can read it until it is redeemed; pass --join @FILE, --join - or SHOAL_JOIN_TOKEN")
	}
	return nil
}

// evacuateOnShutdown moves this member's containers to the others, live
// where CRIU can, when cluster.shutdown=evacuate (as shoal cluster
// evacuate does; shoal cluster restore brings them back). With no other
// member online it leaves them be: they keep running, as on any
// shutdown.
func evacuateOnShutdown(cl *cluster.Cluster, srv *api.Server, self string, log *slog.Logger) {
	if cl.FSM().ClusterConfig()[cluster.ShutdownKey] != cluster.ShutdownEvacuate {
		return
	}
	others := 0
	for _, n := range cl.FSM().Nodes() {
		if n.GetName() != self && n.GetStatus() == cluster.StatusOnline {
			others++
		}
	}
	if others == 0 {
		log.Warn("cluster.shutdown=evacuate, but no other member is online: the containers stay here")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log.Info("cluster.shutdown=evacuate: moving this member's containers to other members before stopping", "node", self)
	start := time.Now()
	resp, err := srv.EvacuateMember(ctx, &shoalv1.EvacuateMemberRequest{Name: self, Live: true})
	if err != nil {
		log.Error("evacuation before shutdown", "err", err)
		return
	}
	log.Info("evacuated before shutdown", "moved", strings.Join(resp.GetMoved(), " "), "stopped", strings.Join(resp.GetStopped(), " "),
		"took", time.Since(start).Round(time.Millisecond))
}
