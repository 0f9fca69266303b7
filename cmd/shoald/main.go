// Command shoald is the Shoal daemon: one per host. With no flags it runs a
// one-node cluster with a btrfs pool on a loop file and the bridge shoalbr0.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-dev/shoal/api"
	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	"github.com/shoal-dev/shoal/node"
	"github.com/shoal-dev/shoal/node/images"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "shoald:", err)
		os.Exit(1)
	}
}

func run() error {
	host, _ := os.Hostname()
	var (
		stateDir   = flag.String("state-dir", "/var/lib/shoal", "directory for all daemon state")
		name       = flag.String("name", host, "this node's name")
		socket     = flag.String("socket", "", "gRPC unix socket (default STATE-DIR/shoal.socket)")
		restSocket = flag.String("rest-socket", "", "REST unix socket (default STATE-DIR/rest.socket)")
		grpcAddr   = flag.String("grpc-addr", "", "TCP address for gRPC (off when empty)")
		httpAddr   = flag.String("http-addr", "127.0.0.1:7080", "TCP address for the REST API (off when empty)")
		raftAddr   = flag.String("raft-addr", "127.0.0.1:0", "TCP address of the Raft transport")
		bridge     = flag.String("bridge", "shoalbr0", "name of the default managed bridge")
		bridgeCIDR = flag.String("bridge-cidr", "auto", "address/prefix of the default bridge, or auto")
		poolDriver = flag.String("pool-driver", "btrfs", "driver of the default storage pool: btrfs or dir")
		poolSource = flag.String("pool-source", "", "existing btrfs mount or directory for the default pool (empty: a loop file / a directory under the state dir)")
		poolSize   = flag.String("pool-size", "", "size of the default pool's loop file (default: a fifth of free space, 5-30GiB)")
		imageCache = flag.String("image-cache", images.DefaultDebianCacheDir, "cache for slow image builds (debootstrap)")
		logLevel   = flag.String("log-level", "info", "debug, info, warn or error")
	)
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %q (allowed: debug, info, warn, error)", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	if err := config.ValidateName("--name", *name); err != nil {
		return err
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
	if err := os.MkdirAll(*stateDir, 0o711); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	cl, err := cluster.Open(startCtx, cluster.Config{NodeName: *name, DataDir: filepath.Join(*stateDir, "raft"), BindAddr: *raftAddr, Logger: log})
	if err != nil {
		return err
	}
	defer cl.Close()
	bus := operations.NewBus()
	n, err := node.New(startCtx, node.Config{
		Name: *name, StateDir: *stateDir,
		DefaultPool: node.PoolConfig{Name: "default", Driver: *poolDriver, Source: *poolSource, Size: size},
		Bridge:      *bridge, BridgeCIDR: *bridgeCIDR, ImageCacheDir: *imageCache, Logger: log,
	}, cl, bus)
	if err != nil {
		return err
	}
	defer n.Close()
	n.Run(ctx)

	srv := api.NewServer(cl, n, operations.NewRegistry(bus, *name), bus, log)
	l, err := api.Listen(ctx, srv, api.Endpoints{Socket: *socket, GRPCAddr: *grpcAddr, HTTPAddr: *httpAddr, RESTSocket: *restSocket})
	if err != nil {
		return err
	}
	defer l.Close()
	log.Info("shoald ready", "node", *name, "socket", *socket, "rest", l.Addr("http"), "grpc", l.Addr("grpc"))

	select {
	case <-ctx.Done():
		log.Info("shutting down; containers keep running")
		return nil
	case err := <-l.Err():
		return err
	}
}
