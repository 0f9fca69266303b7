// Command flipper is the hostile container process of TestFilesRace: it
// swaps the path it is given with each of the others in turn, atomically
// (renameat2 RENAME_EXCHANGE), as fast as it can, so the path keeps
// changing between a directory and symlinks while the host resolves it.
//
//	flipper /tmp/x /tmp/slot1 /tmp/slot2 ...
package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: flipper PATH SLOT...")
		os.Exit(2)
	}
	x, slots := os.Args[1], os.Args[2:]
	for i := 0; ; i++ {
		if err := unix.Renameat2(unix.AT_FDCWD, x, unix.AT_FDCWD, slots[i%len(slots)], unix.RENAME_EXCHANGE); err != nil {
			fmt.Fprintln(os.Stderr, "flipper:", err)
			os.Exit(1)
		}
	}
}
