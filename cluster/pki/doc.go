// Package pki owns the security material of a Shoal cluster: the cluster CA
// created at bootstrap, node and client certificates issued by it, the mutual
// TLS configurations every listener and dialer uses, and one-time join tokens.
//
// Decisions, in short:
//
//   - Keys are ECDSA P-256 everywhere (CA, nodes, clients). Go's TLS 1.3
//     supports it, and unlike Ed25519 so does every other client that may talk
//     to the REST gateway (browsers, curl with older OpenSSL, hardware tokens).
//   - A certificate's role is recorded in exactly one SAN URI, "shoal:role:node"
//     or "shoal:role:client"; the name is the subject Common Name. Node
//     certificates carry the server and client ExtKeyUsages, client
//     certificates only the client one, so a client certificate can never serve.
//   - The gRPC listener uses ServerTLS(pool, cert, false): a client certificate
//     is verified if given, but not required, so the handshake of a client
//     without one succeeds and the API layer answers codes.Unauthenticated
//     (Authenticate returns ErrUnauthenticated; the one error table at the API
//     edge maps it). The Join RPC is the only one a peer without a certificate
//     may call: it is authorised by the token. Node-only listeners such as the
//     Raft transport use ServerTLS(pool, cert, true), where a missing, foreign
//     or client-role certificate fails the handshake.
//   - A joiner trusts nothing on first use: PinnedTLS accepts a server only if
//     its chain contains the CA whose fingerprint the token pins.
//   - Servers store only the SHA-256 hash of a token secret (PendingToken), so
//     the Raft FSM can replicate pending tokens without replicating secrets.
//   - Every function that depends on time takes now; nothing here reads the
//     clock except a TLS handshake in progress (through tls.Config.Time).
//
// The package depends on the standard library only. It never talks to Raft,
// gRPC or the network by itself: callers replicate PendingTokens, serve the
// Join RPC and store the files.
package pki

import "errors"

// Sentinel errors. Functions wrap them with context; test with errors.Is.
var (
	// ErrBadCSR: a certificate signing request does not parse, its signature
	// does not verify, or it asks for something its role may not have.
	ErrBadCSR = errors.New("pki: bad certificate signing request")
	// ErrBadCertificate: a certificate or key is malformed or does not carry a
	// valid Shoal role.
	ErrBadCertificate = errors.New("pki: bad certificate")
	// ErrInvalidRole: a role other than RoleNode or RoleClient.
	ErrInvalidRole = errors.New("pki: invalid role")
	// ErrFingerprintMismatch: a pinned server does not present the CA the
	// pinned fingerprint names.
	ErrFingerprintMismatch = errors.New("pki: CA fingerprint mismatch")
	// ErrUnauthenticated: a peer has no verified certificate with a valid role.
	ErrUnauthenticated = errors.New("pki: unauthenticated")
	// ErrBadToken: a join token does not parse or misses a field.
	ErrBadToken = errors.New("pki: bad join token")
	// ErrTokenUnknown: no pending token matches the name and secret (wrong
	// secret, never issued, or already used).
	ErrTokenUnknown = errors.New("pki: join token unknown or already used")
	// ErrTokenExpired: the token matched but its expiry has passed.
	ErrTokenExpired = errors.New("pki: join token expired")
)
