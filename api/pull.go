package api

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/api/operations"
	"github.com/shoal-dev/shoal/node"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Images from remote image servers: the API checks the request and runs
// the pull as an operation on this member (node.PullImage does the host's
// part); the leader keeps auto-updated images current.

// AutoUpdateKey is the cluster key saying how often images pulled with
// auto_update are checked against their server: hours (LXD's "6") or a
// duration ("30m"); 0 turns it off.
const AutoUpdateKey = "images.auto_update_interval"

// defaultAutoUpdate is LXD's default interval.
const defaultAutoUpdate = 6 * time.Hour

// parseAutoUpdate reads images.auto_update_interval ("" is the default).
func parseAutoUpdate(v string) (time.Duration, error) {
	if v == "" {
		return defaultAutoUpdate, nil
	}
	if h, err := strconv.Atoi(v); err == nil && h >= 0 {
		return time.Duration(h) * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not hours (6) or a duration (30m); 0 turns updates off", v)
	}
	return d, nil
}

// PullImage copies an image from a remote simplestreams server into the
// cluster, as an operation.
func (s *Server) PullImage(ctx context.Context, req *shoalv1.PullImageRequest) (*shoalv1.PullImageResponse, error) {
	if p := req.GetProtocol(); p != "" && p != "simplestreams" {
		return nil, invalid("protocol", fmt.Sprintf("%q is not supported (allowed: simplestreams)", p))
	}
	if !strings.HasPrefix(req.GetServer(), "https://") {
		return nil, invalid("server", fmt.Sprintf("%q: want https://HOST[:PORT][/PATH]", req.GetServer()))
	}
	if req.GetImage() == "" {
		return nil, invalid("image", "an alias or fingerprint on the server is required")
	}
	if err := validAliases(req.GetAliases()); err != nil {
		return nil, toStatus(err)
	}
	src := node.ImageSource{Server: req.GetServer(), Image: req.GetImage(), CertFingerprint: req.GetCertificateFingerprint(), AutoUpdate: req.GetAutoUpdate()}
	op := s.ops.Start("image-pull", "images/"+req.GetImage(), func(ctx context.Context, p *operations.Progress) (map[string]string, error) {
		return s.pullImage(ctx, src, req.GetAliases(), p.Set)
	})
	return &shoalv1.PullImageResponse{Operation: op}, nil
}

// pullImage pulls src and records it with aliases.
func (s *Server) pullImage(ctx context.Context, src node.ImageSource, aliases []string, p node.Progress) (map[string]string, error) {
	img, cached, err := s.node.PullImage(ctx, src, p)
	if err != nil {
		return nil, err
	}
	if cached && src.AutoUpdate {
		img.Metadata.Properties = maps.Clone(img.Metadata.Properties)
		if img.Metadata.Properties == nil {
			img.Metadata.Properties = map[string]string{}
		}
		img.Metadata.Properties[node.PropSourceAutoUpdate] = "true"
	}
	if _, err := s.recordImage(ctx, img, aliases); err != nil {
		return nil, err
	}
	return map[string]string{"fingerprint": img.Fingerprint, "cached": strconv.FormatBool(cached),
		"source_fingerprint": img.Metadata.Properties[node.PropSourceFingerprint]}, nil
}

// imageUpdater is the leader's loop over auto-updated images.
type imageUpdater struct {
	mu      sync.Mutex
	checked map[string]time.Time // by local fingerprint
}

// RunImageUpdates keeps auto-updated images current until ctx ends: on
// the leader, every images.auto_update_interval each is resolved again
// on its server and, when the server has a newer image under the same
// name, that one is pulled and the old one's aliases move to it (the old
// image stays for the containers made from it; delete it by hand).
func (s *Server) RunImageUpdates(ctx context.Context) {
	u := &imageUpdater{checked: map[string]time.Time{}}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !s.cl.IsLeader() {
			continue
		}
		every, err := parseAutoUpdate(s.fsm.ClusterConfig()[AutoUpdateKey])
		if err != nil || every == 0 {
			continue
		}
		for _, img := range s.fsm.Images() {
			props := img.GetProperties()
			if props[node.PropSourceAutoUpdate] != "true" {
				continue
			}
			u.mu.Lock()
			last, seen := u.checked[img.GetFingerprint()]
			if !seen {
				last = time.Unix(0, img.GetCreatedAtUnixNano())
				if last.IsZero() || last.After(time.Now()) {
					last = time.Now()
				}
			}
			due := time.Since(last) >= every
			if due {
				u.checked[img.GetFingerprint()] = time.Now()
			} else if !seen {
				u.checked[img.GetFingerprint()] = last
			}
			u.mu.Unlock()
			if due {
				s.updateImage(ctx, img)
			}
		}
	}
}

// updateImage checks one auto-updated image against its server.
func (s *Server) updateImage(ctx context.Context, img *shoalv1.Image) {
	props := img.GetProperties()
	src := node.ImageSource{Server: props[node.PropSourceServer], Image: props[node.PropSourceImage],
		CertFingerprint: props[node.PropSourceCertificate], AutoUpdate: true}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	remote, err := node.ResolveRemote(ctx, src)
	if err != nil {
		s.log.Warn("image auto-update: resolve on the server", "image", img.GetFingerprint(), "server", src.Server, "alias", src.Image, "err", err)
		return
	}
	if remote.Fingerprint == props[node.PropSourceFingerprint] {
		return
	}
	res, err := s.pullImage(ctx, src, nil, nil)
	if err != nil {
		s.log.Warn("image auto-update: pull", "image", img.GetFingerprint(), "server", src.Server, "alias", src.Image, "err", err)
		return
	}
	for _, a := range img.GetAliases() {
		if err := s.cl.Propose(ctx, &shoalv1.AliasSetCommand{Alias: a, Fingerprint: res["fingerprint"]}); err != nil {
			s.log.Warn("image auto-update: move alias", "alias", a, "err", err)
		}
	}
	s.log.Info("image auto-updated", "server", src.Server, "alias", src.Image, "old", img.GetFingerprint(), "new", res["fingerprint"])
	s.bus.Lifecycle(s.node.Name(), "image-refreshed", res["fingerprint"])
}
