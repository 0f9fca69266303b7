package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shoal-dev/shoal/api/client"
	"github.com/shoal-dev/shoal/cluster/pki"
	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Remotes live in ~/.config/shoal/remotes/NAME/: client.crt, client.key,
// ca.crt and address; ~/.config/shoal/default-remote names the one used
// when --remote is not given ("local" is the unix socket).

func remotesDir() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config dir for remotes: %w", err)
	}
	return filepath.Join(dir, "shoal", "remotes"), nil
}

// remoteClient connects to a saved remote with its client certificate.
func remoteClient(name string) (*client.Client, error) {
	dir, err := remotesDir()
	if err != nil {
		return nil, err
	}
	rdir := filepath.Join(dir, name)
	addr, err := os.ReadFile(filepath.Join(rdir, "address"))
	if err != nil {
		return nil, fmt.Errorf("remote %q is not known (shoal remote list)", name)
	}
	if _, ok := loadImageServer(name); ok {
		return nil, fmt.Errorf("remote %q is an image server (simplestreams): use it as %s:IMAGE", name, name)
	}
	cert, err := pki.LoadKeyPair(rdir, "client")
	if err != nil {
		return nil, err
	}
	if now := time.Now(); now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("the client certificate of remote %q expired at %s: an expired certificate cannot be renewed; ask an admin for a new client token (shoal cluster add NAME --role client) and run `shoal remote add %s https://HOST:PORT --token TOKEN` again",
			name, cert.Leaf.NotAfter.UTC().Format(time.RFC3339), name)
	}
	caPEM, err := os.ReadFile(filepath.Join(rdir, pki.CACertFile))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("remote %q: bad CA certificate", name)
	}
	return client.DialTLS(strings.TrimSpace(string(addr)), pki.ClientTLS(pool, &cert, ""))
}

// defaultRemote returns the remote chosen with `shoal remote switch`.
func defaultRemote() string {
	dir, err := remotesDir()
	if err != nil {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), "default-remote"))
	return strings.TrimSpace(string(b))
}

func (a *app) remoteCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "remote", Short: "Manage remote clusters (mutual TLS) and image servers (simplestreams)"}
	var token, protocol string
	var accept bool
	add := &cobra.Command{
		Use:   "add NAME https://HOST:PORT --token TOKEN | add NAME https://HOST[/PATH] --protocol simplestreams",
		Short: "Trust a cluster by a client join token (from `shoal cluster add NAME --role client`), or add an image server",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := config.ValidateName("name", name); err != nil {
				return err
			}
			switch protocol {
			case "simplestreams":
				return addImageServer(cmd.Context(), name, args[1], accept)
			case "", "shoal":
			default:
				return fmt.Errorf("--protocol: %q is not a protocol (allowed: shoal, simplestreams)", protocol)
			}
			u, err := url.Parse(args[1])
			if err != nil || u.Scheme != "https" || u.Host == "" {
				return fmt.Errorf("%q: want https://HOST:PORT", args[1])
			}
			addr := u.Host
			if _, _, err := net.SplitHostPort(addr); err != nil {
				addr = net.JoinHostPort(addr, "8443")
			}
			if token == "" {
				return errors.New("--token: required (shoal cluster add NAME --role client prints one)")
			}
			tok, err := pki.ParseToken(token)
			if err != nil {
				return err
			}
			key, csr, err := pki.NewKeyAndCSR(tok.Name, pki.RoleClient, nil, nil)
			if err != nil {
				return err
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.PinnedTLS(tok.CAFingerprint))))
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			resp, err := shoalv1.NewClusterServiceClient(conn).Join(ctx, &shoalv1.JoinRequest{Name: tok.Name, Secret: tok.Secret, CsrPem: csr})
			if err != nil {
				return convert(err)
			}
			if _, _, err := pki.VerifyIssued(resp.GetCertPem(), tok.CAFingerprint, time.Now()); err != nil {
				return err
			}
			dir, err := remotesDir()
			if err != nil {
				return err
			}
			rdir := filepath.Join(dir, name)
			if err := pki.SaveKeyPair(rdir, "client", resp.GetCertPem(), key); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(rdir, pki.CACertFile), resp.GetCaCertPem(), 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(rdir, "address"), []byte(addr+"\n"), 0o644); err != nil {
				return err
			}
			fmt.Printf("Remote %s added (cluster %s at %s); use it with --remote %s or `shoal remote switch %s`\n", name, resp.GetClusterName(), addr, name, name)
			return nil
		},
	}
	add.Flags().StringVar(&token, "token", "", "client join token")
	add.Flags().StringVar(&protocol, "protocol", "shoal", "shoal (a cluster) or simplestreams (an image server)")
	add.Flags().BoolVar(&accept, "accept-certificate", false, "image servers: trust (pin) a certificate no CA of this host signed")
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List remotes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := remotesDir()
			if err != nil {
				return err
			}
			ents, _ := os.ReadDir(dir)
			def := defaultRemote()
			rows := [][]string{{"local", "unix://" + a.socket, mark(def == "" || def == "local")}}
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			sort.Strings(names)
			rows[0] = append(rows[0][:2], "shoal", rows[0][2])
			for _, n := range names {
				if srv, ok := loadImageServer(n); ok {
					rows = append(rows, []string{n, srv.URL, "simplestreams", ""})
					continue
				}
				addr, _ := os.ReadFile(filepath.Join(dir, n, "address"))
				rows = append(rows, []string{n, "https://" + strings.TrimSpace(string(addr)), "shoal", mark(def == n)})
			}
			table(os.Stdout, []string{"NAME", "ADDRESS", "PROTOCOL", "DEFAULT"}, rows)
			return nil
		},
	}
	switchCmd := &cobra.Command{
		Use: "switch NAME", Short: "Use a remote by default (local: the unix socket)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := remotesDir()
			if err != nil {
				return err
			}
			if args[0] != "local" {
				if _, err := os.Stat(filepath.Join(dir, args[0], "address")); err != nil {
					return fmt.Errorf("remote %q is not known (shoal remote list)", args[0])
				}
				if _, ok := loadImageServer(args[0]); ok {
					return fmt.Errorf("remote %q is an image server: use it as %s:IMAGE, not as the default cluster", args[0], args[0])
				}
			}
			if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(filepath.Dir(dir), "default-remote"), []byte(args[0]+"\n"), 0o644)
		},
	}
	remove := &cobra.Command{
		Use: "remove NAME", Aliases: []string{"rm"}, Short: "Forget a remote", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := remotesDir()
			if err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, args[0])); err != nil {
				return fmt.Errorf("remote %q is not known (shoal remote list)", args[0])
			}
			return os.RemoveAll(filepath.Join(dir, args[0]))
		},
	}
	renew := &cobra.Command{
		Use: "renew [NAME]", Short: "Renew a remote's client certificate before it expires (same name and rights, new key; the old one is revoked)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := defaultRemote()
			if len(args) == 1 {
				name = args[0]
			}
			if name == "" || name == "local" {
				return errors.New("NAME: give the remote to renew (the local socket has no certificate)")
			}
			c, err := remoteClient(name)
			if err != nil {
				return err
			}
			defer c.Close()
			dir, err := remotesDir()
			if err != nil {
				return err
			}
			rdir := filepath.Join(dir, name)
			old, err := pki.LoadKeyPair(rdir, "client")
			if err != nil {
				return err
			}
			key, csr, err := pki.NewKeyAndCSR(old.Leaf.Subject.CommonName, pki.RoleClient, nil, nil)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			resp, err := c.Cluster.RenewCertificate(ctx, &shoalv1.RenewCertificateRequest{CsrPem: csr})
			if err != nil {
				return convert(err)
			}
			if err := pki.SaveKeyPair(rdir, "client", resp.GetCertPem(), key); err != nil {
				return err
			}
			fmt.Printf("Remote %s: new client certificate, valid until %s\n", name, time.Unix(resp.GetExpiresUnix(), 0).UTC().Format(time.RFC3339))
			return nil
		},
	}
	cmd.AddCommand(add, list, switchCmd, remove, renew)
	return cmd
}

func mark(b bool) string {
	if b {
		return "*"
	}
	return ""
}
