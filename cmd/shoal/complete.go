package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// completionDeadline bounds the daemon call behind a tab press.
const completionDeadline = 2 * time.Second

// containerNames are the names of the containers starting with prefix,
// or none when the daemon does not answer within completionDeadline.
func (a *app) containerNames(cmd *cobra.Command, prefix string, skip []string) []string {
	c, err := a.client()
	if err != nil {
		return nil
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, completionDeadline)
	defer cancel()
	resp, err := c.Containers.ListContainers(ctx, &shoalv1.ListContainersRequest{})
	if err != nil {
		return nil
	}
	var names []string
	for _, ct := range resp.GetContainers() {
		if n := ct.GetContainer().GetName(); strings.HasPrefix(n, prefix) && !slices.Contains(skip, n) {
			names = append(names, n)
		}
	}
	return names
}

// completeFirstName completes a container NAME as the first argument.
func (a *app) completeFirstName(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		if cmd.Name() == "exec" {
			return nil, cobra.ShellCompDirectiveDefault
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return a.containerNames(cmd, toComplete, nil), cobra.ShellCompDirectiveNoFileComp
}

// completeEveryName completes container names at every position, each once.
func (a *app) completeEveryName(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	return a.containerNames(cmd, toComplete, args), cobra.ShellCompDirectiveNoFileComp
}

// completeTarget completes the NAME of a NAME/PATH argument at position
// at (as "NAME/"); the other argument is a local file.
func (a *app) completeTarget(at int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) != at {
			return nil, cobra.ShellCompDirectiveDefault
		}
		if strings.Contains(toComplete, "/") {
			// Paths inside a container are not listed.
			return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		}
		var out []string
		for _, n := range a.containerNames(cmd, toComplete, nil) {
			out = append(out, n+"/")
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// addNameCompletion makes tab complete container names on the commands
// that take one: every argument of the power-state commands and delete,
// the first of the commands about one container (all of config and
// snapshot), and the NAME/ of file push and pull.
func (a *app) addNameCompletion(root *cobra.Command) {
	find := func(path string) *cobra.Command {
		c, _, err := root.Find(strings.Fields(path))
		if err != nil || c == root {
			return nil
		}
		return c
	}
	for _, path := range []string{"start", "stop", "restart", "freeze", "unfreeze", "delete"} {
		if c := find(path); c != nil {
			c.ValidArgsFunction = a.completeEveryName
		}
	}
	for _, path := range []string{"info", "exec", "console", "move", "copy", "publish", "profile assign", "profile add", "profile remove"} {
		if c := find(path); c != nil {
			c.ValidArgsFunction = a.completeFirstName
		}
	}
	var subtree func(c *cobra.Command)
	subtree = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			subtree(sub)
		}
		if c.Runnable() && c.ValidArgsFunction == nil {
			c.ValidArgsFunction = a.completeFirstName
		}
	}
	for _, path := range []string{"config", "snapshot"} {
		if c := find(path); c != nil {
			subtree(c)
		}
	}
	if c := find("file push"); c != nil {
		c.ValidArgsFunction = a.completeTarget(1)
	}
	for _, path := range []string{"file pull", "file delete", "file edit"} {
		if c := find(path); c != nil {
			c.ValidArgsFunction = a.completeTarget(0)
		}
	}
	if c := find("rename"); c != nil {
		c.ValidArgsFunction = a.completeFirstName
	}
}
