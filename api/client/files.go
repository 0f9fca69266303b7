package client

import (
	"context"
	"errors"
	"io"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// PullTree reads the tree at path in a container (a directory, or one
// file) as a tar stream into w; the header describes path itself.
func (c *Client) PullTree(ctx context.Context, name, path string, w io.Writer) (*shoalv1.FileHeader, error) {
	stream, err := c.Containers.PullFile(ctx, &shoalv1.PullFileRequest{Name: name, Path: path, Archive: true})
	if err != nil {
		return nil, Convert(err)
	}
	var h *shoalv1.FileHeader
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return h, nil
		}
		if err != nil {
			return h, Convert(err)
		}
		switch m := resp.GetMsg().(type) {
		case *shoalv1.PullFileResponse_Header:
			h = m.Header
		case *shoalv1.PullFileResponse_Data:
			if _, err := w.Write(m.Data); err != nil {
				return h, err
			}
		}
	}
}
