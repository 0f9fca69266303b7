package cluster

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

func TestTrustCommands(t *testing.T) {
	f := NewFSM()
	a := &shoalv1.TrustEntry{Fingerprint: "sha256:aa", Name: "laptop", Role: "client", IssuedUnix: 10, ExpiresUnix: 100,
		Grant: &shoalv1.Grant{ContainerPrefixes: []string{"web-"}, ReadOnly: true}}
	mustApply(t, f, &shoalv1.TrustAddCommand{Entry: a})
	if got := f.Trust("sha256:aa"); !proto.Equal(got, a) || f.Revoked("sha256:aa") {
		t.Fatalf("trusted entry: %v", got)
	}
	if f.Trust("sha256:zz") != nil || f.Revoked("sha256:zz") {
		t.Fatal("an unknown certificate is trusted or revoked")
	}
	if err := apply(t, f, &shoalv1.TrustAddCommand{Entry: &shoalv1.TrustEntry{Name: "x"}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("entry without fingerprint: %v", err)
	}

	// A renewal adds the new certificate and revokes the old in one entry.
	b := &shoalv1.TrustEntry{Fingerprint: "sha256:bb", Name: "laptop", Role: "client", RenewedFrom: "sha256:aa", Grant: a.Grant}
	held := f.Trust("sha256:aa")
	mustApply(t, f, &shoalv1.TrustAddCommand{Entry: b, Supersedes: "sha256:aa", NowUnix: 50})
	if !f.Revoked("sha256:aa") || f.Revoked("sha256:bb") || f.Trust("sha256:aa").GetRevokedUnix() != 50 {
		t.Fatalf("after renewal: old %v, new %v", f.Trust("sha256:aa"), f.Trust("sha256:bb"))
	}
	if held.GetRevoked() {
		t.Fatal("an entry a reader held was changed in place")
	}
	// A revoked certificate can neither renew nor be trusted again.
	if err := apply(t, f, &shoalv1.TrustAddCommand{Entry: &shoalv1.TrustEntry{Fingerprint: "sha256:cc", Name: "laptop"}, Supersedes: "sha256:aa"}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("renewal of a revoked certificate: %v", err)
	}
	if err := apply(t, f, &shoalv1.TrustAddCommand{Entry: a}); !errors.Is(err, ErrRevoked) {
		t.Fatalf("re-adding a revoked certificate: %v", err)
	}

	// Revocation is all or nothing.
	if err := apply(t, f, &shoalv1.TrustRevokeCommand{Fingerprints: []string{"sha256:bb", "sha256:nope"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking an unknown certificate: %v", err)
	}
	if f.Revoked("sha256:bb") {
		t.Fatal("a failed revocation revoked part of its list")
	}
	mustApply(t, f, &shoalv1.TrustRevokeCommand{Fingerprints: []string{"sha256:bb"}, NowUnix: 60})
	if !f.Revoked("sha256:bb") {
		t.Fatal("not revoked")
	}

	// Tokens: revoke drops a pending one.
	mustApply(t, f, &shoalv1.TokenAddCommand{Name: "n9", SecretHash: "h", ExpiresUnix: 99, Role: "client",
		Grant: &shoalv1.Grant{ReadOnly: true}, CertValiditySeconds: 5})
	if tok := f.Token("n9"); tok.GetGrant().GetReadOnly() != true || tok.GetCertValiditySeconds() != 5 || len(f.Tokens()) != 1 {
		t.Fatalf("pending token: %v", tok)
	}
	mustApply(t, f, &shoalv1.TokenRevokeCommand{Name: "n9"})
	if f.Token("n9") != nil {
		t.Fatal("revoked token still pending")
	}
	if err := apply(t, f, &shoalv1.TokenRevokeCommand{Name: "n9"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking a missing token: %v", err)
	}

	// The trust store survives a snapshot.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(f.s.export(), g.s.export()) || len(g.TrustEntries()) != 2 || !g.Revoked("sha256:aa") {
		t.Fatalf("restored trust store differs: %v", g.TrustEntries())
	}
}
