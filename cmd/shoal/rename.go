package main

import (
	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func (a *app) renameCmd() *cobra.Command {
	return &cobra.Command{
		Use: "rename OLD NEW", Short: "Rename a stopped container (its snapshots, volume and addresses follow)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return renameContainer(cmd, c, args[0], args[1])
		}),
	}
}

// renameContainer renames a container (shoal rename, shoal move OLD NEW).
func renameContainer(cmd *cobra.Command, c *client.Client, old, name string) error {
	if _, err := c.Containers.RenameContainer(cmd.Context(), &shoalv1.RenameContainerRequest{Name: old, NewName: name}); err != nil {
		return convert(err)
	}
	return nil
}
