package zfs

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"

	"github.com/shoal-dev/shoal/storage/internal/fsutil"
)

// zfs runs a zfs subcommand and returns its stdout; the error holds the
// command line and its stderr.
func zfs(ctx context.Context, args ...string) ([]byte, error) {
	return fsutil.Output(ctx, "zfs", args...)
}

// zpool runs a zpool subcommand likewise.
func zpool(ctx context.Context, args ...string) ([]byte, error) {
	return fsutil.Output(ctx, "zpool", args...)
}

// zfsStream runs a zfs subcommand with stdin and stdout attached (send
// and receive).
func zfsStream(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "zfs", args...)
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fsutil.CmdError(cmd, err, stderr.Bytes())
	}
	return nil
}

// prop formats a -o argument.
func prop(name, value string) string { return name + "=" + value }

// firstField returns the first line of out, trimmed.
func firstLine(out []byte) string {
	s, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(s)
}
