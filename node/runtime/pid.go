package runtime

import "context"

// InitPid returns the host pid of a container's init (one round trip to
// its LXC monitor), 0 when it is not running; ErrNotFound when it is not
// defined here.
func (r *Runtime) InitPid(ctx context.Context, name string) (int, error) {
	c, err := r.container(name)
	if err != nil {
		return 0, err
	}
	return max(0, c.InitPid()), nil
}
