// Package config validates container names and config keys (LXD's names:
// limits.cpu, limits.memory, security.privileged, ...) and parses them into
// typed values. It does no I/O beyond reading the host's CPU and memory size.
package config
