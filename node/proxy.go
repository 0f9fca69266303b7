package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/cluster"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// A proxy device (LXD's, bind=host) is a listener on the owner that
// forwards each connection to an address inside the container, dialled
// from its network namespace. It runs while the container runs on this
// member; a move or a stop closes it, the new owner opens its own.
//
// A udp proxy keeps a session per client address: a socket connected to
// the address inside (made in the container's network namespace) whose
// replies go back to that client from the listening socket. A session
// idle for udpIdle ends, as a NAT's would.

// udpIdle ends a udp proxy's session that carried nothing that long.
const udpIdle = 60 * time.Second

// proxy is one running proxy device.
type proxy struct {
	key string    // listen → connect
	ln  io.Closer // the listener or the listening packet socket
}

// proxies are the running proxy devices of this member, by "ct/device".
type proxies struct {
	mu sync.Mutex
	m  map[string]*proxy
}

func proxyKey(d *shoalv1.Device) string {
	return d.GetConfig()["listen"] + " -> " + d.GetConfig()["connect"]
}

// active reports whether this member runs a container's proxy device as
// described (so its port is taken by it, not by someone else).
func (p *proxies) active(ct, dev, key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	x, ok := p.m[ct+"/"+dev]
	return ok && x.key == key
}

// applyProxies makes the running proxy devices of a running container the
// ones its record has.
func (n *Node) applyProxies(ct *shoalv1.Container) error {
	want := map[string]*shoalv1.Device{}
	for name, d := range cluster.ExpandedDevices(ct) {
		if d.GetType() == config.DeviceProxy {
			want[name] = d
		}
	}
	n.proxies.mu.Lock()
	defer n.proxies.mu.Unlock()
	if n.proxies.m == nil {
		n.proxies.m = map[string]*proxy{}
	}
	prefix := ct.GetName() + "/"
	for k, p := range n.proxies.m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if d, ok := want[strings.TrimPrefix(k, prefix)]; !ok || proxyKey(d) != p.key {
			p.close()
			delete(n.proxies.m, k)
		}
	}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if _, ok := n.proxies.m[prefix+name]; ok {
			continue
		}
		p, err := n.startProxy(ct.GetName(), name, want[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.proxies.m[prefix+name] = p
	}
	return errors.Join(errs...)
}

// stopProxies closes a container's proxy devices on this member.
func (n *Node) stopProxies(container string) {
	n.proxies.mu.Lock()
	defer n.proxies.mu.Unlock()
	for k, p := range n.proxies.m {
		if strings.HasPrefix(k, container+"/") {
			p.close()
			delete(n.proxies.m, k)
		}
	}
}

func (n *Node) startProxy(container, dev string, d *shoalv1.Device) (*proxy, error) {
	lnet, laddr, err := config.ParseProxyAddr(d.GetConfig()["listen"])
	if err != nil {
		return nil, fmt.Errorf("device %s: listen: %w", dev, err)
	}
	cnet, caddr, err := config.ParseProxyAddr(d.GetConfig()["connect"])
	if err != nil {
		return nil, fmt.Errorf("device %s: connect: %w", dev, err)
	}
	log := n.log.With("container", container, "device", dev)
	if lnet == "udp" {
		pc, err := net.ListenPacket(lnet, laddr)
		if err != nil {
			return nil, fmt.Errorf("device %s: listen on %s on member %s: %w", dev, laddr, n.cfg.Name, err)
		}
		log.Info("proxy device listening", "listen", "udp:"+pc.LocalAddr().String(), "connect", caddr)
		go n.serveUDP(pc, container, caddr, log)
		return &proxy{key: proxyKey(d), ln: pc}, nil
	}
	ln, err := net.Listen(lnet, laddr)
	if err != nil {
		return nil, fmt.Errorf("device %s: listen on %s on member %s: %w", dev, laddr, n.cfg.Name, err)
	}
	p := &proxy{key: proxyKey(d), ln: ln}
	log.Info("proxy device listening", "listen", ln.Addr().String(), "connect", caddr)
	go func() {
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				n.forward(conn, container, cnet, caddr, log)
			}()
		}
	}()
	return p, nil
}

// forward copies one connection both ways to the address inside.
func (n *Node) forward(conn net.Conn, container, network, addr string, log interface{ Warn(string, ...any) }) {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	in, err := n.rt.DialInside(ctx, container, network, addr)
	cancel()
	if err != nil {
		log.Warn("proxy device: connect", "err", err)
		return
	}
	defer in.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if c, ok := dst.(interface{ CloseWrite() error }); ok {
			c.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(in, conn)
	go pipe(conn, in)
	<-done
	<-done
}

// udpSession is one client's way through a udp proxy.
type udpSession struct {
	in   net.Conn     // connected to the address inside
	last atomic.Int64 // unix nanoseconds of the last datagram either way
}

// serveUDP forwards the datagrams pc receives, each client through its
// own session, until pc is closed; the sessions end with it.
func (n *Node) serveUDP(pc net.PacketConn, container, addr string, log interface{ Warn(string, ...any) }) {
	var mu sync.Mutex
	sessions := map[string]*udpSession{}
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range sessions {
			s.in.Close()
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		size, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		mu.Lock()
		s := sessions[from.String()]
		mu.Unlock()
		if s == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			in, err := n.rt.DialInside(ctx, container, "udp", addr)
			cancel()
			if err != nil {
				log.Warn("proxy device: connect", "err", err)
				continue
			}
			s = &udpSession{in: in}
			s.last.Store(time.Now().UnixNano())
			mu.Lock()
			sessions[from.String()] = s
			mu.Unlock()
			go func() {
				defer func() {
					mu.Lock()
					delete(sessions, from.String())
					mu.Unlock()
					s.in.Close()
				}()
				reply := make([]byte, 64<<10)
				for {
					_ = s.in.SetReadDeadline(time.Unix(0, s.last.Load()).Add(udpIdle))
					size, err := s.in.Read(reply)
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() && time.Since(time.Unix(0, s.last.Load())) < udpIdle {
						continue // the client sent meanwhile
					}
					if err != nil {
						return // idle, refused inside, or closed with pc
					}
					s.last.Store(time.Now().UnixNano())
					if _, err := pc.WriteTo(reply[:size], from); err != nil {
						return
					}
				}
			}()
		}
		s.last.Store(time.Now().UnixNano())
		if _, err := s.in.Write(buf[:size]); err != nil {
			log.Warn("proxy device: forward a datagram", "err", err)
		}
	}
}

// close stops listening; open connections end with their peers.
func (p *proxy) close() {
	p.ln.Close()
}
