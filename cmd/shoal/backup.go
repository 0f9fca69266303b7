package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// exportCmd is `shoal export NAME FILE`: a backup tarball (LXD's layout).
func (a *app) exportCmd() *cobra.Command {
	var req shoalv1.ExportContainerRequest
	cmd := &cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write a backup tarball of a container (with its snapshots, config and devices)",
		Long: "Write a backup tarball of a container: backup/index.yaml with its record, its snapshots and\n" +
			"its root filesystem. A running container is exported from a snapshot taken at the start.",
		Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			req.Name = args[0]
			dst := args[1]
			tmp, err := os.CreateTemp(filepath.Dir(dst), ".shoal-export-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			bar := newBytesBar("Exporting "+req.Name, -1)
			w := &countWriter{w: tmp, bar: bar}
			bi, err := c.ExportContainer(cmd.Context(), &req, w, func(bi *shoalv1.BackupInfo) {
				bar.describe(fmt.Sprintf("Exporting %s (%s of data)", req.Name, humanBytes(bi.GetSize())))
			})
			bar.finish()
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), dst); err != nil {
				return err
			}
			kind := "plain"
			if bi.GetOptimized() {
				kind = "optimized " + bi.GetBackend()
			}
			fmt.Printf("Backup of %s written to %s: %s, %d snapshots, %s\n", req.Name, dst, humanBytes(w.n), len(bi.GetSnapshots()), kind)
			return nil
		}),
	}
	cmd.Flags().BoolVar(&req.InstanceOnly, "instance-only", false, "leave the snapshots out")
	cmd.Flags().BoolVar(&req.OptimizedStorage, "optimized-storage", false, "the pool driver's own format (btrfs send); imports only into a pool of that driver")
	cmd.Flags().StringVar(&req.Compression, "compression", "gzip", "gzip or none")
	cmd.ValidArgsFunction = a.completeFirstName
	return cmd
}

// importCmd is `shoal import FILE [NAME]`.
func (a *app) importCmd() *cobra.Command {
	var h shoalv1.ImportContainerHeader
	cmd := &cobra.Command{
		Use:   "import FILE [NAME]",
		Short: "Create a container, stopped, from a backup tarball",
		Args:  cobra.RangeArgs(1, 2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			var size int64 = -1
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				size = fi.Size()
			}
			if len(args) == 2 {
				h.Name = args[1]
			}
			bar := newBytesBar("Importing "+args[0], size)
			resp, err := c.ImportContainer(cmd.Context(), &h, &countReader{r: f, bar: bar})
			bar.finish()
			if err != nil {
				return err
			}
			ct := resp.GetContainer().GetContainer()
			fmt.Printf("Container %s imported on %s (%d snapshots)\n", ct.GetName(), ct.GetNode(), len(ct.GetSnapshots()))
			return nil
		}),
	}
	cmd.Flags().StringVar(&h.Target, "target", "", "member to create the container on")
	cmd.Flags().StringVarP(&h.Pool, "storage", "s", "", "storage pool (default: the backup's, if the cluster has it, else the default)")
	return cmd
}

// bytesBar shows bytes moved: a bar on a terminal, nothing otherwise.
type bytesBar struct{ bar *progressbar.ProgressBar }

func newBytesBar(desc string, total int64) *bytesBar {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return &bytesBar{}
	}
	return &bytesBar{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond))}
}

func (b *bytesBar) add(n int) {
	if b.bar != nil {
		b.bar.Add(n)
	}
}

func (b *bytesBar) describe(d string) {
	if b.bar != nil {
		b.bar.Describe(d)
	}
}

func (b *bytesBar) finish() {
	if b.bar != nil {
		b.bar.Finish()
	}
}

type countWriter struct {
	w   io.Writer
	n   int64
	bar *bytesBar
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.bar.add(n)
	return n, err
}

type countReader struct {
	r   io.Reader
	bar *bytesBar
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.bar.add(n)
	return n, err
}
