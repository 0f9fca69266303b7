// Package tests holds Shoal's end-to-end tests: they build the real shoald
// and shoal binaries, start daemons on temporary state dirs with their own
// btrfs loop pool and bridge, and drive them through the CLI and REST,
// against real LXC containers.
//
// Under CI=true a missing prerequisite (root, LXC, btrfs, dnsmasq) fails the
// run; elsewhere the tests skip and say what is missing.
package tests
