package main

import (
	"fmt"
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
	imp := &cobra.Command{
		Use: "import FILE", Short: "Import an image tarball (Shoal's or LXD's unified format)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			c, err := a.client()
			if err != nil {
				return err
			}
			img, err := c.ImportImage(cmd.Context(), f, aliases)
			if err != nil {
				return err
			}
			fmt.Printf("Image imported with fingerprint %s\n", img.GetFingerprint()[:12])
			return nil
		},
	}
	imp.Flags().StringArrayVar(&aliases, "alias", nil, "alias for the image (repeatable)")

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
