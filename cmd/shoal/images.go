package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func (a *app) imageCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images"}
	var suite, alias, format string
	build := &cobra.Command{
		Use: "build busybox|debian", Short: "Build an image locally", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Images.BuildImage(cmd.Context(), &shoalv1.BuildImageRequest{Builder: args[0], Suite: suite, Alias: alias})
			if err != nil {
				return convert(err)
			}
			op, err := follow(cmd, c, resp.GetOperation())
			if err != nil {
				return err
			}
			fmt.Printf("Image %s built (alias %s)\n", op.GetResult()["fingerprint"][:12], op.GetResult()["alias"])
			return nil
		}),
	}
	build.Flags().StringVar(&suite, "suite", "", "Debian suite: bookworm or trixie (default bookworm)")
	build.Flags().StringVar(&alias, "alias", "", "alias for the image (default: the builder's name)")

	list := &cobra.Command{
		Use: "list [REMOTE:]", Aliases: []string{"ls"}, Short: "List images (the cluster's, or an image server's)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && strings.TrimSuffix(args[0], ":") != "local" {
				srv, _, err := parseImageRef(strings.TrimSuffix(args[0], ":") + ":")
				if err != nil {
					return err
				}
				if err := checkTableFormat(format); err != nil || format == "json" || format == "yaml" {
					return fmt.Errorf("--format: %q: an image server's list prints as table, compact or csv", format)
				}
				return listServerImages(cmd, *srv, format)
			}
			if err := checkFormat(format); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Images.ListImages(cmd.Context(), &shoalv1.ListImagesRequest{})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			var rows [][]string
			for _, img := range resp.GetImages() {
				rows = append(rows, []string{strings.Join(img.GetAliases(), ","), img.GetFingerprint()[:12],
					img.GetProperties()["description"], humanBytes(img.GetSize()), since(img.GetCreatedAtUnixNano())})
			}
			table(os.Stdout, []string{"ALIAS", "FINGERPRINT", "DESCRIPTION", "SIZE", "CREATED"}, rows)
			return nil
		},
	}
	list.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)

	info := &cobra.Command{
		Use: "info IMAGE", Short: "Show an image", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			resp, err := c.Images.GetImage(cmd.Context(), &shoalv1.GetImageRequest{Image: args[0]})
			if err != nil {
				return convert(err)
			}
			return printData(os.Stdout, "yaml", resp.GetImage())
		}),
	}
	del := &cobra.Command{
		Use: "delete IMAGE...", Aliases: []string{"rm"}, Short: "Delete images", Args: cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			for _, ref := range args {
				if _, err := c.Images.DeleteImage(cmd.Context(), &shoalv1.DeleteImageRequest{Image: ref}); err != nil {
					return convert(err)
				}
			}
			return nil
		}),
	}
	export := &cobra.Command{
		Use: "export IMAGE FILE", Short: "Write an image tarball", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			dst := args[1]
			tmp, err := os.CreateTemp(filepath.Dir(dst), ".shoal-export-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			_, err = c.ExportImage(cmd.Context(), args[0], tmp)
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			return os.Rename(tmp.Name(), dst)
		}),
	}
	var aliases []string
	var tag string
	imp := &cobra.Command{
		Use:   "import FILE|DIR",
		Short: "Import an image: a unified tarball (Shoal's or LXD's), an OCI image layout (tar or directory) or a docker save archive",
		Long: `Import an image. The format is found from the content: a unified image
tarball (Shoal's or LXD's) is stored as it is; an OCI image layout (as a tar
archive, or a directory holding oci-layout) or a docker save archive is
converted into a system container image whose containers run the OCI
config's Entrypoint and Cmd (with its Env, WorkingDir and User) under LXC's
minimal init. Every blob is checked against its sha256 digest.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, size, closeFn, err := openImport(args[0])
			if err != nil {
				return err
			}
			defer closeFn()
			c, err := a.client()
			if err != nil {
				return err
			}
			bar := newBytesBar("Importing "+args[0], size)
			img, err := c.ImportImageWith(cmd.Context(), &importReader{r: r, bar: bar}, &shoalv1.ImportImageHeader{Aliases: aliases, Tag: tag})
			bar.finish()
			if err != nil {
				return err
			}
			fmt.Printf("Image imported with fingerprint %s\n", img.GetFingerprint()[:12])
			if run := img.GetProperties()["oci.init"]; run != "" {
				fmt.Printf("Containers of it run: %s\n", run)
			}
			return nil
		},
	}
	imp.Flags().StringArrayVar(&aliases, "alias", nil, "alias for the image (repeatable)")
	imp.Flags().StringVar(&tag, "tag", "", "the image to take from an OCI layout or docker save archive holding several: a tag (latest, app:1.0) or manifest digest prefix")

	aliasCmd := &cobra.Command{Use: "alias", Short: "Manage image aliases"}
	aliasCmd.AddCommand(&cobra.Command{
		Use: "create ALIAS IMAGE", Args: cobra.ExactArgs(2), Short: "Point an alias at an image",
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Images.CreateImageAlias(cmd.Context(), &shoalv1.CreateImageAliasRequest{Alias: args[0], Image: args[1]})
			return convert(err)
		}),
	}, &cobra.Command{
		Use: "delete ALIAS", Args: cobra.ExactArgs(1), Short: "Remove an alias",
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Images.DeleteImageAlias(cmd.Context(), &shoalv1.DeleteImageAliasRequest{Alias: args[0]})
			return convert(err)
		}),
	})
	cmd.AddCommand(build, list, info, del, export, imp, aliasCmd, a.imageCopyCmd(), a.imageServeCmd())
	return cmd
}

func (a *app) publishCmd() *cobra.Command {
	var aliases []string
	cmd := &cobra.Command{
		Use: "publish NAME[/SNAPSHOT]", Short: "Make an image of a container or snapshot", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, snap, _ := strings.Cut(args[0], "/")
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Images.PublishImage(cmd.Context(), &shoalv1.PublishImageRequest{Container: name, Snapshot: snap, Aliases: aliases})
			if err != nil {
				return convert(err)
			}
			op, err := follow(cmd, c, resp.GetOperation())
			if err != nil {
				return err
			}
			fmt.Printf("Image published with fingerprint %s\n", op.GetResult()["fingerprint"][:12])
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&aliases, "alias", nil, "alias for the new image (repeatable)")
	return cmd
}

// openImport opens what `image import` sends: a file as it is, or an OCI
// layout directory as a tar stream of its files. It returns the size to
// show progress against (-1 when unknown).
func openImport(p string) (io.Reader, int64, func(), error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, 0, nil, err
	}
	if !fi.IsDir() {
		f, err := os.Open(p)
		if err != nil {
			return nil, 0, nil, err
		}
		size := int64(-1)
		if fi.Mode().IsRegular() {
			size = fi.Size()
		}
		return f, size, func() { f.Close() }, nil
	}
	if _, err := os.Stat(filepath.Join(p, "oci-layout")); err != nil {
		return nil, 0, nil, fmt.Errorf("%s is a directory without an oci-layout file: not an OCI image layout", p)
	}
	var total int64
	if err := filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return err
	}); err != nil {
		return nil, 0, nil, err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarLayout(p, pw)) }()
	return pr, total, func() { pr.Close() }, nil
}

// tarLayout writes the directories and regular files of an OCI layout
// directory as a tar stream.
func tarLayout(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel) + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: info.ModTime()})
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: an OCI layout holds only files and directories", path)
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Typeflag: tar.TypeReg, Mode: 0o644, Size: info.Size(), ModTime: info.ModTime()}); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// importReader shows an upload's progress, then that the daemon is still
// at work (checking digests, converting an OCI image) once it is sent.
type importReader struct {
	r   io.Reader
	bar *bytesBar
}

func (i *importReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	i.bar.add(n)
	if err == io.EOF {
		i.bar.describe("Sent; the daemon checks and unpacks the image")
	}
	return n, err
}
