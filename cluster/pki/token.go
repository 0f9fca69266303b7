package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// TokenVersion is the version Encode writes and ParseToken accepts.
const TokenVersion = 1

// secretBytes is the entropy of a token secret.
const secretBytes = 32

// Token is a one-time join token: what `shoal cluster add` prints and
// `shoald --join` or `shoal remote add --token` consume. Only its holder
// knows Secret; servers keep a PendingToken with the secret's hash.
type Token struct {
	ClusterName   string
	CAFingerprint string    // "sha256:<hex>" of the cluster CA; the joiner pins it
	Secret        string    // 32 random bytes, base64url without padding
	Addresses     []string  // member addresses (host:port) to dial
	Expires       time.Time // whole seconds, UTC
	Name          string    // the node or client the token was issued for
}

// tokenWire is the JSON form of a Token.
type tokenWire struct {
	Version     int      `json:"v"`
	ClusterName string   `json:"cluster"`
	Fingerprint string   `json:"fp"`
	Secret      string   `json:"secret"`
	Addresses   []string `json:"addrs"`
	Expires     int64    `json:"exp"` // Unix seconds
	Name        string   `json:"name"`
}

// NewToken creates a token for name, pinning ca, listing addrs, that expires
// ttl after now (rounded down to the second). Store t.Pending(role) in the
// replicated state and hand t.Encode() to the admin.
func NewToken(name string, ca *CA, addrs []string, ttl time.Duration, now time.Time) (Token, error) {
	if err := checkName(name); err != nil {
		return Token{}, fmt.Errorf("pki: new token: %w", err)
	}
	if ttl <= 0 {
		return Token{}, fmt.Errorf("pki: new token for %q: ttl %v is not positive", name, ttl)
	}
	if len(addrs) == 0 {
		return Token{}, fmt.Errorf("pki: new token for %q: no member addresses", name)
	}
	buf := make([]byte, secretBytes)
	if _, err := rand.Read(buf); err != nil {
		return Token{}, fmt.Errorf("pki: new token for %q: %w", name, err)
	}
	return Token{
		ClusterName:   ca.ClusterName(),
		CAFingerprint: ca.Fingerprint(),
		Secret:        base64.RawURLEncoding.EncodeToString(buf),
		Addresses:     append([]string(nil), addrs...),
		Expires:       time.Unix(now.Add(ttl).Unix(), 0).UTC(),
		Name:          name,
	}, nil
}

// Pending returns the server-side record of t for role: the secret is kept
// only as its hash.
func (t Token) Pending(role Role) PendingToken {
	return PendingToken{Name: t.Name, SecretHash: HashSecret(t.Secret), Expires: t.Expires, Role: role}
}

// Expired reports whether t has expired at now.
func (t Token) Expired(now time.Time) bool { return !now.Before(t.Expires) }

// String describes t without its secret, so a logged token leaks nothing.
func (t Token) String() string {
	return fmt.Sprintf("join token for %q in cluster %q (CA %s, expires %s, members %v)",
		t.Name, t.ClusterName, t.CAFingerprint, t.Expires.Format(time.RFC3339), t.Addresses)
}

// Encode returns the compact form of t: base64url (no padding) of a
// versioned JSON object.
func (t Token) Encode() string {
	b, err := json.Marshal(tokenWire{
		Version:     TokenVersion,
		ClusterName: t.ClusterName,
		Fingerprint: t.CAFingerprint,
		Secret:      t.Secret,
		Addresses:   t.Addresses,
		Expires:     t.Expires.Unix(),
		Name:        t.Name,
	})
	if err != nil { // a struct of strings and ints always marshals
		panic(fmt.Sprintf("pki: encode token: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes what Encode produced. It rejects text that is not
// base64url JSON, unknown fields, a version other than TokenVersion, and a
// token missing or malforming any field, naming each one. Errors wrap
// ErrBadToken. It does not check expiry (see Expired); the server does.
func ParseToken(s string) (Token, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Token{}, fmt.Errorf("pki: parse token: not base64url: %w", ErrBadToken)
	}
	// The version first, so a newer token with new fields is reported as a
	// version problem, not as an unknown field.
	var v struct {
		Version int `json:"v"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return Token{}, fmt.Errorf("pki: parse token: not a token: %w: %w", ErrBadToken, err)
	}
	if v.Version != TokenVersion {
		return Token{}, fmt.Errorf("pki: parse token: version %d, this build reads version %d: %w", v.Version, TokenVersion, ErrBadToken)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var w tokenWire
	if err := dec.Decode(&w); err != nil {
		return Token{}, fmt.Errorf("pki: parse token: not a token: %w: %w", ErrBadToken, err)
	}
	var problems []string
	if w.ClusterName == "" {
		problems = append(problems, "cluster name missing")
	}
	if w.Fingerprint == "" {
		problems = append(problems, "CA fingerprint missing")
	} else if _, err := normalizeFingerprint(w.Fingerprint); err != nil {
		problems = append(problems, "CA fingerprint malformed")
	}
	if w.Secret == "" {
		problems = append(problems, "secret missing")
	} else if b, err := base64.RawURLEncoding.DecodeString(w.Secret); err != nil || len(b) != secretBytes {
		problems = append(problems, "secret malformed")
	}
	if len(w.Addresses) == 0 {
		problems = append(problems, "member addresses missing")
	}
	for _, a := range w.Addresses {
		if strings.TrimSpace(a) == "" {
			problems = append(problems, "empty member address")
			break
		}
	}
	if w.Expires <= 0 {
		problems = append(problems, "expiry missing")
	}
	if w.Name == "" {
		problems = append(problems, "name missing")
	}
	if len(problems) > 0 {
		return Token{}, fmt.Errorf("pki: parse token: %s: %w", strings.Join(problems, ", "), ErrBadToken)
	}
	return Token{
		ClusterName:   w.ClusterName,
		CAFingerprint: strings.ToLower(w.Fingerprint),
		Secret:        w.Secret,
		Addresses:     w.Addresses,
		Expires:       time.Unix(w.Expires, 0).UTC(),
		Name:          w.Name,
	}, nil
}

// HashSecret returns the hex SHA-256 of a token secret: what servers store
// and replicate instead of the secret. A secret has 256 random bits, so an
// unsalted fast hash is enough.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// PendingToken is the replicated, server-side record of an unused token.
type PendingToken struct {
	Name       string
	SecretHash string // HashSecret of the secret; never the secret itself
	Expires    time.Time
	Role       Role
}

// Redeem finds the pending token for name whose hash matches secret,
// comparing hashes in constant time against every entry. A wrong secret, an
// unknown name or a used token (the caller, the FSM, deletes a token once
// redeemed) gives ErrTokenUnknown; a match at or after its expiry gives
// ErrTokenExpired. Expiry is reported only to a holder of the right secret.
func Redeem(pending []PendingToken, name, secret string, now time.Time) (PendingToken, error) {
	want := []byte(HashSecret(secret))
	var (
		found PendingToken
		ok    bool
	)
	for _, p := range pending {
		match := subtle.ConstantTimeCompare([]byte(p.SecretHash), want) == 1
		if match && p.Name == name && !ok {
			found, ok = p, true
		}
	}
	if !ok {
		return PendingToken{}, fmt.Errorf("pki: redeem token for %q: %w", name, ErrTokenUnknown)
	}
	if !now.Before(found.Expires) {
		return PendingToken{}, fmt.Errorf("pki: redeem token for %q: expired at %s: %w", name, found.Expires.Format(time.RFC3339), ErrTokenExpired)
	}
	return found, nil
}
