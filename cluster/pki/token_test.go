package pki

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func newTestToken(t *testing.T, ca *CA) Token {
	t.Helper()
	tok, err := NewToken("node2", ca, []string{"10.0.0.1:8443", "10.0.0.2:8443"}, time.Hour, t0)
	if err != nil {
		t.Fatalf("NewToken: %v", err)
	}
	return tok
}

func TestTokenRoundTrip(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	tok := newTestToken(t, ca)
	if tok.CAFingerprint != ca.Fingerprint() || tok.ClusterName != "prod" || tok.Name != "node2" {
		t.Fatalf("token %v", tok)
	}
	if !tok.Expires.Equal(t0.Add(time.Hour)) {
		t.Fatalf("Expires %v", tok.Expires)
	}
	if raw, err := base64.RawURLEncoding.DecodeString(tok.Secret); err != nil || len(raw) != 32 {
		t.Fatalf("secret %q: %d bytes, %v", tok.Secret, len(raw), err)
	}
	enc := tok.Encode()
	if strings.ContainsAny(enc, "+/= \n") {
		t.Fatalf("encoding %q is not compact base64url", enc)
	}
	got, err := ParseToken("  " + enc + "\n")
	if err != nil {
		t.Fatalf("ParseToken: %v", err)
	}
	if got.ClusterName != tok.ClusterName || got.CAFingerprint != tok.CAFingerprint || got.Secret != tok.Secret ||
		got.Name != tok.Name || !got.Expires.Equal(tok.Expires) || strings.Join(got.Addresses, ",") != strings.Join(tok.Addresses, ",") {
		t.Fatalf("round trip: got %+v, want %+v", got, tok)
	}
	if other := newTestToken(t, ca); other.Secret == tok.Secret {
		t.Fatal("two tokens share a secret")
	}
	if strings.Contains(tok.String(), tok.Secret) {
		t.Fatal("String leaks the secret")
	}
	if tok.Expired(t0.Add(59*time.Minute)) || !tok.Expired(t0.Add(time.Hour)) {
		t.Fatal("Expired boundary wrong")
	}
}

func TestNewTokenRefuses(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	if _, err := NewToken("", ca, []string{"a:1"}, time.Hour, t0); err == nil {
		t.Fatal("empty name accepted")
	}
	if _, err := NewToken("n", ca, nil, time.Hour, t0); err == nil {
		t.Fatal("no addresses accepted")
	}
	if _, err := NewToken("n", ca, []string{"a:1"}, 0, t0); err == nil {
		t.Fatal("zero ttl accepted")
	}
}

func TestParseTokenRefuses(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	valid := newTestToken(t, ca)
	wire := func(edit func(m map[string]any)) string {
		b, err := base64.RawURLEncoding.DecodeString(valid.Encode())
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(out)
	}
	tests := []struct {
		name, token, wantMsg string
	}{
		{"empty", "", "not a token"},
		{"garbage", "!!!not base64!!!", "not base64url"},
		{"base64 of garbage", base64.RawURLEncoding.EncodeToString([]byte("hello")), "not a token"},
		{"JSON array", base64.RawURLEncoding.EncodeToString([]byte("[1,2]")), "not a token"},
		{"wrong version", wire(func(m map[string]any) { m["v"] = 2; m["future"] = true }), "version 2"},
		{"no version", wire(func(m map[string]any) { delete(m, "v") }), "version 0"},
		{"unknown field", wire(func(m map[string]any) { m["role"] = "admin" }), "unknown field"},
		{"missing secret", wire(func(m map[string]any) { delete(m, "secret") }), "secret missing"},
		{"short secret", wire(func(m map[string]any) { m["secret"] = "abc" }), "secret malformed"},
		{"missing fingerprint", wire(func(m map[string]any) { delete(m, "fp") }), "CA fingerprint missing"},
		{"bad fingerprint", wire(func(m map[string]any) { m["fp"] = "sha1:00" }), "CA fingerprint malformed"},
		{"missing addresses", wire(func(m map[string]any) { m["addrs"] = []string{} }), "member addresses missing"},
		{"missing expiry", wire(func(m map[string]any) { delete(m, "exp") }), "expiry missing"},
		{"missing name and cluster", wire(func(m map[string]any) { delete(m, "name"); delete(m, "cluster") }), "cluster name missing, name missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.token)
			wantIs(t, err, ErrBadToken)
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("error %q does not say %q", err, tc.wantMsg)
			}
		})
	}
}

func TestRedeem(t *testing.T) {
	ca := newTestCA(t, "prod", t0)
	tok := newTestToken(t, ca)
	other, err := NewToken("alice", ca, []string{"10.0.0.1:8443"}, time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	pending := []PendingToken{other.Pending(RoleClient), tok.Pending(RoleNode)}

	// Only the hash is stored: nothing in the replicated record is the secret.
	b, err := json.Marshal(pending)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), tok.Secret) || strings.Contains(string(b), other.Secret) {
		t.Fatalf("pending tokens hold a plaintext secret: %s", b)
	}
	if pending[1].SecretHash != HashSecret(tok.Secret) || len(pending[1].SecretHash) != 64 {
		t.Fatalf("SecretHash %q", pending[1].SecretHash)
	}

	got, err := Redeem(pending, "node2", tok.Secret, t0.Add(30*time.Minute))
	if err != nil {
		t.Fatalf("Redeem: %v", err)
	}
	if got.Name != "node2" || got.Role != RoleNode {
		t.Fatalf("redeemed %+v", got)
	}

	cases := []struct {
		name, who, secret string
		at                time.Time
		want              error
	}{
		{"wrong secret", "node2", other.Secret, t0, ErrTokenUnknown},
		{"garbage secret", "node2", "x", t0, ErrTokenUnknown},
		{"right secret, wrong name", "node3", tok.Secret, t0, ErrTokenUnknown},
		{"expired", "node2", tok.Secret, t0.Add(time.Hour), ErrTokenExpired},
		{"expired, wrong secret says unknown", "node2", "x", t0.Add(2 * time.Hour), ErrTokenUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Redeem(pending, tc.who, tc.secret, tc.at)
			wantIs(t, err, tc.want)
		})
	}

	// The FSM deletes a redeemed token; a reuse is then unknown.
	remaining := pending[:1]
	_, err = Redeem(remaining, "node2", tok.Secret, t0)
	wantIs(t, err, ErrTokenUnknown)
}
