package node

import (
	"context"
	"io"

	"github.com/shoal-dev/shoal/node/runtime"
)

// DeleteFile removes a file, symlink or empty directory in a container.
func (n *Node) DeleteFile(ctx context.Context, name, path string) error {
	if _, err := n.fsm.Container(name); err != nil {
		return err
	}
	return n.rt.DeleteFile(ctx, name, path)
}

// PullTree writes the tree at path in a container to w as a tar stream
// (runtime.PullTree); info is called with the root's description first.
func (n *Node) PullTree(ctx context.Context, name, path string, w io.Writer, info func(runtime.TreeInfo) error) error {
	if _, err := n.fsm.Container(name); err != nil {
		return err
	}
	return n.rt.PullTree(ctx, name, path, w, info)
}
