package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
)

func main() {
	cfg := Config{Progress: os.Stdout}
	flag.IntVar(&cfg.Members, "members", 5000, "simulated members (node records with capacities, no daemons)")
	flag.IntVar(&cfg.Placements, "placements", 1_000_000, "containers to place")
	flag.IntVar(&cfg.Clients, "clients", 256, "concurrent clients, spread over the three Raft members")
	flag.IntVar(&cfg.Floor, "floor", 100_000, "no-op entries measured first, as the floor")
	profile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	dir := flag.String("dir", "", "where the Raft members keep their logs (default: a temporary directory, removed after)")
	flag.Parse()
	cfg.Dir = *dir
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "shoal-c1m-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	res, err := Run(context.Background(), cfg)
	if res != nil {
		res.Report(os.Stdout, cfg)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "c1m:", err)
		pprof.StopCPUProfile()
		os.RemoveAll(cfg.Dir)
		os.Exit(1)
	}
}
