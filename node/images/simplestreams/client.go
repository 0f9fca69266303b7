package simplestreams

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxIndex bounds an index or products file.
const maxIndex = 64 << 20

// Client reads one simplestreams server.
type Client struct {
	// IdleTimeout fails a file's download when the server sends nothing
	// for this long, headers included (DefaultIdleTimeout when zero): a
	// server that stalls mid-file never holds a pull forever.
	IdleTimeout time.Duration

	base *url.URL
	http *http.Client
}

// DefaultIdleTimeout is a download's idle timeout when the Client sets none.
const DefaultIdleTimeout = 30 * time.Second

// NewClient returns a client of the server at rawURL (https only). With
// pin (a certificate's SHA-256, hex), the server's leaf certificate must
// be that one; without, it must chain to a CA the host trusts.
func NewClient(rawURL, pin string) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(rawURL, "/") + "/")
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: server %q: want https://HOST[:PORT][/PATH]", ErrInvalid, rawURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if pin != "" {
		pin = strings.ToLower(strings.ReplaceAll(pin, ":", ""))
		tr.TLSClientConfig = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, // the pin below is the check
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the server sent no certificate")
				}
				if got := CertFingerprint(cs.PeerCertificates[0]); got != pin {
					return fmt.Errorf("the server's certificate is %s, not the pinned %s", got, pin)
				}
				return nil
			},
		}
	}
	return &Client{base: u, http: &http.Client{Transport: tr, Timeout: 0}}, nil
}

// CertFingerprint is a certificate's SHA-256, lowercase hex.
func CertFingerprint(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}

// get fetches a path of the tree (ctx bounds it).
func (c *Client) get(ctx context.Context, p string) (*http.Response, error) {
	if err := checkPath(p); err != nil {
		return nil, err
	}
	u := c.base.ResolveReference(&url.URL{Path: p})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("image server %s: %w", c.base.Host, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("image server %s: GET %s: %s", c.base.Host, p, resp.Status)
	}
	return resp, nil
}

func (c *Client) getJSON(ctx context.Context, p string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.get(ctx, p)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxIndex+1))
	if err != nil {
		return fmt.Errorf("image server %s: %s: %w", c.base.Host, p, err)
	}
	if len(b) > maxIndex {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalid, p, maxIndex)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, p, err)
	}
	return nil
}

// Images lists every image the server offers (all architectures), newest
// version first within each product.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	var idx index
	if err := c.getJSON(ctx, "streams/v1/index.json", &idx); err != nil {
		return nil, err
	}
	var out []Image
	found := false
	for _, e := range idx.Index {
		if e.DataType != "image-downloads" {
			continue
		}
		found = true
		var p products
		if err := c.getJSON(ctx, e.Path, &p); err != nil {
			return nil, err
		}
		out = append(out, p.images()...)
	}
	if !found {
		return nil, fmt.Errorf("%w: streams/v1/index.json lists no image-downloads products", ErrInvalid)
	}
	return out, nil
}

// Resolve finds the image ref names for arch (simplestreams' names: amd64,
// arm64): an alias such as debian/12, a product, or a fingerprint prefix.
func (c *Client) Resolve(ctx context.Context, ref, arch string) (Image, error) {
	all, err := c.Images(ctx)
	if err != nil {
		return Image{}, err
	}
	return resolve(all, ref, arch)
}

// Progress receives a download's bytes so far of total.
type Progress func(done, total int64)

// Download fetches an image's files into dir (meta and rootfs for a split
// image, unified for a unified one; the others ""), checking each file's
// size and SHA-256 and the image's fingerprint. A failure removes what it
// wrote.
func (c *Client) Download(ctx context.Context, img Image, dir string, p Progress) (meta, rootfs, unified string, err error) {
	if p == nil {
		p = func(int64, int64) {}
	}
	total, done := img.Size(), int64(0)
	fetch := func(it Item, name string, combined hash.Hash) (string, error) {
		dst := filepath.Join(dir, name)
		idle := cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
		fctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		watchdog := time.AfterFunc(idle, func() {
			cancel(fmt.Errorf("%w: %s: nothing received for %s", ErrStalled, it.Path, idle))
		})
		defer watchdog.Stop()
		stalled := func(err error) error {
			if cause := context.Cause(fctx); cause != nil && errors.Is(cause, ErrStalled) {
				return cause
			}
			return err
		}
		resp, err := c.get(fctx, it.Path)
		if err != nil {
			return "", stalled(err)
		}
		defer resp.Body.Close()
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		ws := []io.Writer{f, h}
		if combined != nil {
			ws = append(ws, combined)
		}
		n, err := io.Copy(io.MultiWriter(ws...), &counting{r: io.LimitReader(resp.Body, it.Size+1), f: func(n int64) {
			watchdog.Reset(idle)
			p(done+n, total)
		}})
		if err != nil {
			err = stalled(err)
		}
		done += n
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && n != it.Size {
			err = fmt.Errorf("%w: %s: %d bytes, the index says %d", ErrInvalid, it.Path, n, it.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); err == nil && got != strings.ToLower(it.SHA256) {
			err = fmt.Errorf("%w: %s: sha256 %s, the index says %s", ErrInvalid, it.Path, got, it.SHA256)
		}
		if err != nil {
			os.Remove(dst)
			return "", err
		}
		return dst, nil
	}
	defer func() {
		if err != nil {
			for _, f := range []string{meta, rootfs, unified} {
				if f != "" {
					os.Remove(f)
				}
			}
			meta, rootfs, unified = "", "", ""
		}
	}()
	if !img.Split() {
		unified, err = fetch(img.Unified, "unified.tar.gz", nil)
		return meta, rootfs, unified, err
	}
	combined := sha256.New()
	if meta, err = fetch(img.Meta, "meta.tar.xz", combined); err != nil {
		return
	}
	if rootfs, err = fetch(img.Rootfs, "root.squashfs", combined); err != nil {
		return
	}
	if got := hex.EncodeToString(combined.Sum(nil)); got != img.Fingerprint {
		err = fmt.Errorf("%w: image %s: the files' combined sha256 is %s", ErrInvalid, img.Fingerprint, got)
	}
	return
}

// counting reports bytes read.
type counting struct {
	r io.Reader
	n int64
	f func(int64)
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.f(c.n)
	}
	return n, err
}
