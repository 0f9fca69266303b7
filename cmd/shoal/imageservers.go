package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/api/client"
	"github.com/shoal-dev/shoal/node/images/simplestreams"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Image servers are remotes of protocol simplestreams, saved beside the
// cluster remotes (~/.config/shoal/remotes/NAME/: address holds the URL,
// protocol "simplestreams", certificate the pinned SHA-256 if any). They
// are used as REMOTE:IMAGE, as in LXD (shoal launch images:debian/12 c1).

// imageServer is a saved simplestreams remote.
type imageServer struct {
	Name, URL, Pin string
}

// loadImageServer reads remote name; ok is false when it is not an image
// server (unknown, or a cluster).
func loadImageServer(name string) (imageServer, bool) {
	dir, err := remotesDir()
	if err != nil {
		return imageServer{}, false
	}
	rdir := filepath.Join(dir, name)
	proto, err := os.ReadFile(filepath.Join(rdir, "protocol"))
	if err != nil || strings.TrimSpace(string(proto)) != "simplestreams" {
		return imageServer{}, false
	}
	addr, err := os.ReadFile(filepath.Join(rdir, "address"))
	if err != nil {
		return imageServer{}, false
	}
	pin, _ := os.ReadFile(filepath.Join(rdir, "certificate"))
	return imageServer{Name: name, URL: strings.TrimSpace(string(addr)), Pin: strings.TrimSpace(string(pin))}, true
}

// parseImageRef splits [REMOTE:]IMAGE: srv is nil for the cluster's own
// images (no remote, or local:).
func parseImageRef(arg string) (*imageServer, string, error) {
	remote, ref, ok := strings.Cut(arg, ":")
	if !ok {
		return nil, arg, nil
	}
	if remote == "local" {
		return nil, ref, nil
	}
	srv, found := loadImageServer(remote)
	if !found {
		return nil, "", fmt.Errorf("image %q: %q is not an image server (shoal remote add NAME https://HOST --protocol simplestreams)", arg, remote)
	}
	return &srv, ref, nil
}

// addImageServer saves a simplestreams remote after checking the server
// answers with an index: its certificate must chain to a CA the host
// trusts, or be accepted (and pinned) with --accept-certificate.
func addImageServer(ctx context.Context, name, rawURL string, accept bool) error {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q: want https://HOST[:PORT][/PATH]", rawURL)
	}
	pin := ""
	if _, err := simplestreams.NewClient(rawURL, ""); err != nil {
		return err
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "443")
	}
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	conn, err := d.DialContext(dctx, "tcp", host)
	cancel()
	if err != nil {
		return fmt.Errorf("image server %s: %w", host, err)
	}
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	conn.Close()
	if len(certs) == 0 {
		return fmt.Errorf("image server %s sent no certificate", host)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, verr := certs[0].Verify(x509.VerifyOptions{DNSName: u.Hostname(), Intermediates: inter}); verr != nil {
		fp := simplestreams.CertFingerprint(certs[0])
		if !accept {
			return fmt.Errorf("image server %s: its certificate (sha256 %s) is not signed by a CA this host trusts: check the fingerprint and add it with --accept-certificate", host, fp)
		}
		pin = fp
	}
	c, err := simplestreams.NewClient(rawURL, pin)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	imgs, err := c.Images(lctx)
	if err != nil {
		return err
	}
	dir, err := remotesDir()
	if err != nil {
		return err
	}
	rdir := filepath.Join(dir, name)
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return err
	}
	for file, body := range map[string]string{"address": rawURL, "protocol": "simplestreams", "certificate": pin} {
		if body == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(rdir, file), []byte(body+"\n"), 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("Image server %s added (%s, %d images); use it as %s:IMAGE\n", name, rawURL, len(imgs), name)
	return nil
}

// pullImage copies an image from a server into the cluster through the
// daemon, showing progress, and returns its fingerprint.
func pullImage(cmd *cobra.Command, c *client.Client, srv *imageServer, ref string, aliases []string, autoUpdate bool) (string, error) {
	resp, err := c.Images.PullImage(cmd.Context(), &shoalv1.PullImageRequest{Server: srv.URL, Protocol: "simplestreams",
		Image: ref, CertificateFingerprint: srv.Pin, Aliases: aliases, AutoUpdate: autoUpdate})
	if err != nil {
		return "", convert(err)
	}
	op, err := follow(cmd, c, resp.GetOperation())
	if err != nil {
		return "", err
	}
	return op.GetResult()["fingerprint"], nil
}

// listServerImages prints a server's images.
func listServerImages(cmd *cobra.Command, srv imageServer, format string) error {
	c, err := simplestreams.NewClient(srv.URL, srv.Pin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
	defer cancel()
	all, err := c.Images(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var rows [][]string
	for _, img := range all {
		if seen[img.Product] {
			continue // newest version only
		}
		seen[img.Product] = true
		rows = append(rows, []string{strings.Join(img.Aliases, ","), img.Fingerprint[:12], img.OS + " " + img.Release + " " + img.Variant,
			img.Arch, humanBytes(img.Size()), img.Version})
	}
	return printTable(os.Stdout, format, []string{"ALIAS", "FINGERPRINT", "DESCRIPTION", "ARCH", "SIZE", "VERSION"}, rows)
}

func (a *app) imageCopyCmd() *cobra.Command {
	var aliases []string
	var autoUpdate bool
	cmd := &cobra.Command{
		Use: "copy REMOTE:IMAGE local: [--alias ALIAS] [--auto-update]", Aliases: []string{"cp"}, Short: "Copy an image from an image server into the cluster (with progress; one already copied is not downloaded again)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			srv, ref, err := parseImageRef(args[0])
			if err != nil {
				return err
			}
			if srv == nil {
				return fmt.Errorf("source %q: want REMOTE:IMAGE on an image server", args[0])
			}
			if dst := strings.TrimSuffix(args[1], ":"); dst != "local" {
				return fmt.Errorf("destination %q: only local: (the cluster this client uses) is supported", args[1])
			}
			fp, err := pullImage(cmd, c, srv, ref, aliases, autoUpdate)
			if err != nil {
				return err
			}
			fmt.Printf("Image copied from %s:%s: %s\n", srv.Name, ref, fp[:min(12, len(fp))])
			return nil
		}),
	}
	cmd.Flags().StringArrayVar(&aliases, "alias", nil, "local alias for it (repeatable)")
	cmd.Flags().BoolVar(&autoUpdate, "auto-update", false, "keep it current with the server (images.auto_update_interval)")
	return cmd
}

func (a *app) imageServeCmd() *cobra.Command {
	var listen, certDir string
	cmd := &cobra.Command{
		Use:   "serve DIR [IMAGE...] [--listen ADDR]",
		Short: "Publish the cluster's images (all, or those named) as a simplestreams tree in DIR; with --listen, serve it over HTTPS read-only",
		Args:  cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			n, err := writeImageTree(cmd, c, dir, args[1:])
			if err != nil {
				return err
			}
			fmt.Printf("Wrote a simplestreams tree of %d images to %s\n", n, dir)
			if listen == "" {
				return nil
			}
			return serveTree(cmd.Context(), dir, listen, certDir)
		}),
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to serve the tree on over HTTPS (HOST:PORT)")
	cmd.Flags().StringVar(&certDir, "cert-dir", "", "directory holding server.crt and server.key (default: made once under DIR/.tls)")
	return cmd
}

// writeImageTree exports images through the daemon and writes them as a
// tree of split images.
func writeImageTree(cmd *cobra.Command, c *client.Client, dir string, names []string) (int, error) {
	resp, err := c.Images.ListImages(cmd.Context(), &shoalv1.ListImagesRequest{})
	if err != nil {
		return 0, convert(err)
	}
	var want []*shoalv1.Image
	for _, img := range resp.GetImages() {
		if len(names) == 0 {
			want = append(want, img)
			continue
		}
		for _, n := range names {
			if strings.HasPrefix(img.GetFingerprint(), n) || containsString(img.GetAliases(), n) {
				want = append(want, img)
				break
			}
		}
	}
	if len(names) > 0 && len(want) == 0 {
		return 0, fmt.Errorf("image: none of %s is an image of the cluster", strings.Join(names, ", "))
	}
	work, err := os.MkdirTemp("", "shoal-serve-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	var tree []simplestreams.TreeImage
	for i, img := range want {
		tarball := filepath.Join(work, fmt.Sprintf("%d.tar", i))
		f, err := os.Create(tarball)
		if err != nil {
			return 0, err
		}
		_, err = c.ExportImage(cmd.Context(), img.GetFingerprint(), f)
		f.Close()
		if err != nil {
			return 0, convert(err)
		}
		wd := filepath.Join(work, fmt.Sprint(i))
		if err := os.Mkdir(wd, 0o700); err != nil {
			return 0, err
		}
		in, err := os.Open(tarball)
		if err != nil {
			return 0, err
		}
		meta, sq, md, err := simplestreams.Split(cmd.Context(), in, wd)
		in.Close()
		if err != nil {
			return 0, fmt.Errorf("image %.12s: %w", img.GetFingerprint(), err)
		}
		os.Remove(tarball)
		tree = append(tree, simplestreams.TreeImage{Meta: meta, Squashfs: sq, Metadata: md, Aliases: img.GetAliases()})
	}
	return len(tree), simplestreams.WriteTree(dir, tree)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// serveTree serves dir read-only over HTTPS until interrupted. It serves
// static files only (an image server, like images.linuxcontainers.org), no
// part of Shoal's API.
func serveTree(ctx context.Context, dir, listen, certDir string) error {
	if certDir == "" {
		certDir = filepath.Join(dir, ".tls")
	}
	cert, err := serverCert(certDir, listen)
	if err != nil {
		return err
	}
	fs := http.FileServer(http.Dir(dir))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "read-only", http.StatusMethodNotAllowed)
			return
		}
		if strings.HasPrefix(r.URL.Path, "/.tls") {
			http.NotFound(w, r)
			return
		}
		fs.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	fmt.Printf("Serving %s on https://%s (certificate sha256 %s)\n", dir, ln.Addr(), simplestreams.CertFingerprint(cert.Leaf))
	fmt.Printf("Add it with: shoal remote add NAME https://%s --protocol simplestreams --accept-certificate\n", ln.Addr())
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serverCert loads, or makes once, a self-signed certificate for listen.
func serverCert(dir, listen string) (tls.Certificate, error) {
	crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if c, err := tls.LoadX509KeyPair(crt, key); err == nil {
		c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
		return c, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "shoal image server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if host, _, err := net.SplitHostPort(listen); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else if host != "" {
			tmpl.DNSNames = []string{host}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return tls.Certificate{}, err
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return tls.Certificate{}, err
	}
	return serverCert(dir, listen)
}
