package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shoal-dev/shoal/cluster/pki"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Authentication and authorization: one table (rules, below) says who may
// call each RPC; REST routes are the same RPCs (the gateway calls the gRPC
// server with the REST caller's identity), so they share it. Callers are:
//
//   - local: the unix sockets, which only root and the admin group can
//     open (listen.go): the host's administrators.
//   - member: a node certificate of a current member (its name is in the
//     FSM's nodes) that the trust store has not revoked.
//   - client: a client certificate the trust store holds, not revoked;
//     restricted when its entry has a grant (container name prefixes,
//     read-only).
//
// A certificate is checked on every call and, for calls that stay open
// (streams, waits), again whenever the trust store or the members change
// and every second: a revoked certificate loses its open calls too.

// access is how much a method asks of its caller.
type access uint8

const (
	// accessOpen: anyone, with or without a certificate (Join redeems a
	// token; health checks).
	accessOpen access = iota
	// accessMember: member-to-member RPCs, node certificates only.
	accessMember
	// accessAdmin: cluster administration: local admins, members and
	// unrestricted clients.
	accessAdmin
	// accessRead: also restricted clients (read-only ones included), within
	// their grant.
	accessRead
	// accessWrite: also restricted clients that are not read-only, within
	// their grant.
	accessWrite
)

func (a access) String() string {
	return [...]string{"open", "member", "admin", "read", "write"}[a]
}

// rule is a method's entry in the table. containers returns the container
// names a request touches, for restricted clients (nil: the method is not
// about one container; list results are filtered instead, see filter).
type rule struct {
	access     access
	containers func(proto.Message) []string
}

// field returns the string fields of a request that name containers.
func field(names ...string) func(proto.Message) []string {
	return func(m proto.Message) []string {
		r := m.ProtoReflect()
		var out []string
		for _, n := range names {
			if fd := r.Descriptor().Fields().ByName(protoreflect.Name(n)); fd != nil {
				out = append(out, r.Get(fd).String())
			}
		}
		return out
	}
}

// rules is the authorization table: every method the daemon serves is in
// it; a method that is not is refused (TestEveryMethodHasARule).
var rules = map[string]rule{
	// Containers.
	"/shoal.v1.ContainerService/CreateContainer":      {accessWrite, field("name")},
	"/shoal.v1.ContainerService/ListContainers":       {accessRead, nil},
	"/shoal.v1.ContainerService/GetContainer":         {accessRead, field("name")},
	"/shoal.v1.ContainerService/UpdateContainer":      {accessWrite, field("name")},
	"/shoal.v1.ContainerService/DeleteContainer":      {accessWrite, field("name")},
	"/shoal.v1.ContainerService/ChangeContainerState": {accessWrite, field("name")},
	"/shoal.v1.ContainerService/Exec": {accessWrite, func(m proto.Message) []string {
		return []string{m.(*shoalv1.ExecRequest).GetStart().GetName()}
	}},
	"/shoal.v1.ContainerService/PushFile": {accessWrite, func(m proto.Message) []string {
		return []string{m.(*shoalv1.PushFileRequest).GetHeader().GetName()}
	}},
	"/shoal.v1.ContainerService/PullFile":        {accessRead, field("name")},
	"/shoal.v1.ContainerService/GetConsoleLog":   {accessRead, field("name")},
	"/shoal.v1.ContainerService/CopyContainer":   {accessWrite, field("source", "name")},
	"/shoal.v1.ContainerService/MoveContainer":   {accessWrite, field("name")},
	"/shoal.v1.ContainerService/AddNIC":          {accessWrite, field("container")},
	"/shoal.v1.ContainerService/RemoveNIC":       {accessWrite, field("container")},
	"/shoal.v1.ContainerService/CreateSnapshot":  {accessWrite, field("container")},
	"/shoal.v1.ContainerService/ListSnapshots":   {accessRead, field("container")},
	"/shoal.v1.ContainerService/RestoreSnapshot": {accessWrite, field("container")},
	"/shoal.v1.ContainerService/DeleteSnapshot":  {accessWrite, field("container")},
	"/shoal.v1.ContainerService/RenameSnapshot":  {accessWrite, field("container")},
	// A rename needs both names granted: a restricted client may not move
	// a container out of (or into) its prefixes.
	"/shoal.v1.ContainerService/RenameContainer": {accessWrite, field("name", "new_name")},
	"/shoal.v1.ContainerService/DeleteFile":      {accessWrite, field("name")},
	// Backups are write-level, as in LXD: a tarball carries the whole
	// filesystem and the record, and an import names the container it makes.
	"/shoal.v1.ContainerService/ExportContainer": {accessWrite, field("name")},
	"/shoal.v1.ContainerService/ImportContainer": {accessWrite, func(m proto.Message) []string {
		return []string{m.(*shoalv1.ImportContainerRequest).GetHeader().GetName()}
	}},
	// Profiles: restricted clients may read them.
	"/shoal.v1.ProfileService/CreateProfile": {accessAdmin, nil},
	"/shoal.v1.ProfileService/ListProfiles":  {accessRead, nil},
	"/shoal.v1.ProfileService/GetProfile":    {accessRead, nil},
	"/shoal.v1.ProfileService/UpdateProfile": {accessAdmin, nil},
	"/shoal.v1.ProfileService/RenameProfile": {accessAdmin, nil},
	"/shoal.v1.ProfileService/DeleteProfile": {accessAdmin, nil},
	// Images: restricted clients may read the catalogue.
	"/shoal.v1.ImageService/BuildImage":       {accessAdmin, nil},
	"/shoal.v1.ImageService/ImportImage":      {accessAdmin, nil},
	"/shoal.v1.ImageService/ExportImage":      {accessRead, nil},
	"/shoal.v1.ImageService/ListImages":       {accessRead, nil},
	"/shoal.v1.ImageService/GetImage":         {accessRead, nil},
	"/shoal.v1.ImageService/DeleteImage":      {accessAdmin, nil},
	"/shoal.v1.ImageService/PublishImage":     {accessAdmin, nil},
	"/shoal.v1.ImageService/CreateImageAlias": {accessAdmin, nil},
	"/shoal.v1.ImageService/DeleteImageAlias": {accessAdmin, nil},
	"/shoal.v1.ImageService/PullImage":        {accessAdmin, nil},
	// Storage and networks.
	"/shoal.v1.StorageService/ListStoragePools":  {accessRead, nil},
	"/shoal.v1.StorageService/GetStoragePool":    {accessRead, nil},
	"/shoal.v1.StorageService/CreateStoragePool": {accessAdmin, nil},
	// Custom volumes: restricted clients may read them (attaching one is
	// adding a device, which they may not).
	"/shoal.v1.StorageService/ListStorageVolumes":           {accessRead, nil},
	"/shoal.v1.StorageService/GetStorageVolume":             {accessRead, nil},
	"/shoal.v1.StorageService/CreateStorageVolume":          {accessAdmin, nil},
	"/shoal.v1.StorageService/UpdateStorageVolume":          {accessAdmin, nil},
	"/shoal.v1.StorageService/DeleteStorageVolume":          {accessAdmin, nil},
	"/shoal.v1.StorageService/CreateStorageVolumeSnapshot":  {accessAdmin, nil},
	"/shoal.v1.StorageService/DeleteStorageVolumeSnapshot":  {accessAdmin, nil},
	"/shoal.v1.StorageService/RestoreStorageVolumeSnapshot": {accessAdmin, nil},
	"/shoal.v1.StorageService/CopyStorageVolume":            {accessAdmin, nil},
	"/shoal.v1.StorageService/MoveStorageVolume":            {accessAdmin, nil},
	"/shoal.v1.NetworkService/ListNetworks":                 {accessRead, nil},
	"/shoal.v1.NetworkService/GetNetwork":                   {accessRead, nil},
	"/shoal.v1.NetworkService/CreateNetwork":                {accessAdmin, nil},
	"/shoal.v1.NetworkService/DeleteNetwork":                {accessAdmin, nil},
	// Operations and events: restricted clients see only their containers'.
	"/shoal.v1.OperationService/GetOperation":    {accessRead, nil},
	"/shoal.v1.OperationService/ListOperations":  {accessRead, nil},
	"/shoal.v1.OperationService/WaitOperation":   {accessRead, nil},
	"/shoal.v1.OperationService/WatchOperation":  {accessRead, nil},
	"/shoal.v1.OperationService/CancelOperation": {accessWrite, nil},
	"/shoal.v1.EventService/StreamEvents":        {accessRead, nil},
	// The cluster.
	"/shoal.v1.ClusterService/CreateJoinToken":     {accessAdmin, nil},
	"/shoal.v1.ClusterService/Join":                {accessOpen, nil},
	"/shoal.v1.ClusterService/ListMembers":         {accessRead, nil},
	"/shoal.v1.ClusterService/RemoveMember":        {accessAdmin, nil},
	"/shoal.v1.ClusterService/EvacuateMember":      {accessAdmin, nil},
	"/shoal.v1.ClusterService/RestoreMember":       {accessAdmin, nil},
	"/shoal.v1.ClusterService/HealMember":          {accessAdmin, nil},
	"/shoal.v1.ClusterService/ReadIndex":           {accessMember, nil},
	"/shoal.v1.ClusterService/UpdateClusterConfig": {accessAdmin, nil},
	"/shoal.v1.ClusterService/GetClusterConfig":    {accessRead, nil},
	"/shoal.v1.ClusterService/Apply":               {accessMember, nil},
	"/shoal.v1.ClusterService/ListTokens":          {accessAdmin, nil},
	"/shoal.v1.ClusterService/RevokeToken":         {accessAdmin, nil},
	"/shoal.v1.ClusterService/ListTrust":           {accessAdmin, nil},
	"/shoal.v1.ClusterService/RevokeTrust":         {accessAdmin, nil},
	"/shoal.v1.ClusterService/RenewCertificate":    {accessRead, nil},
	// A member's hardware, as ListMembers' capacity: readers may see it.
	"/shoal.v1.ClusterService/GetResources": {accessRead, nil},
	// Member-to-member streams.
	"/shoal.v1.MigrationService/ReceiveVolume":    {accessMember, nil},
	"/shoal.v1.MigrationService/RestoreContainer": {accessMember, nil},
	// Infrastructure.
	"/grpc.health.v1.Health/Check":                                   {accessOpen, nil},
	"/grpc.health.v1.Health/Watch":                                   {accessOpen, nil},
	"/grpc.health.v1.Health/List":                                    {accessOpen, nil},
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      {accessRead, nil},
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": {accessRead, nil},
	// HTTP routes outside the gateway, by path (metrics.go): a scrape is
	// a read; restricted clients see only their containers' series.
	metricsPath: {accessRead, nil},
}

// callerKind is what kind of caller an identity is.
type callerKind uint8

const (
	callerNone callerKind = iota
	callerLocal
	callerMember
	callerClient
)

// identity is an authenticated caller.
type identity struct {
	kind callerKind
	// name is the certificate's name (members, clients); "local" for the
	// unix sockets.
	name        string
	fingerprint string
	// grant is set for a restricted client.
	grant *shoalv1.Grant
}

// role is the certificate role of a member or client.
func (id identity) role() pki.Role {
	if id.kind == callerMember {
		return pki.RoleNode
	}
	return pki.RoleClient
}

func (id identity) String() string {
	switch id.kind {
	case callerLocal:
		return "local admin"
	case callerMember:
		return fmt.Sprintf("member %q", id.name)
	case callerClient:
		if id.grant != nil {
			return fmt.Sprintf("restricted client %q", id.name)
		}
		return fmt.Sprintf("client %q", id.name)
	}
	return "anonymous caller"
}

// restrictedPrivileges are the config keys a restricted client may not set
// to anything but their default: each gives root on the host.
var restrictedPrivileges = []string{"security.privileged", "security.nesting"}

type identityKey struct{}

// callerOf returns the authenticated caller a handler runs for.
func callerOf(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}

var errNoCertificate = status.Error(codes.Unauthenticated,
	"a client certificate of this cluster is required: use `shoal remote add` with a client token (shoal cluster add NAME --role client)")

// authenticate says who the caller of ctx is (callerNone with no error for
// an anonymous caller on the TLS port).
func (s *Server) authenticate(ctx context.Context) (identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	switch ai := p.AuthInfo.(type) {
	case localAuth:
		return identity{kind: callerLocal, name: "local"}, nil
	case gatewayAuth:
		md, _ := metadata.FromIncomingContext(ctx)
		v := md.Get(gatewayIdentityKey)
		if len(v) != 1 {
			return identity{}, status.Error(codes.Unauthenticated, "REST caller without one identity")
		}
		switch {
		case v[0] == "local":
			return identity{kind: callerLocal, name: "local"}, nil
		case strings.HasPrefix(v[0], "cert:"):
			return s.certIdentity(ctx, strings.TrimPrefix(v[0], "cert:"), nil)
		}
		return identity{}, nil
	case credentials.TLSInfo:
		chains := ai.State.VerifiedChains
		if len(chains) == 0 || len(chains[0]) == 0 {
			return identity{}, nil
		}
		leaf := chains[0][0]
		return s.certIdentity(ctx, pki.FingerprintOf(leaf), leaf)
	}
	return identity{}, status.Error(codes.Unauthenticated, "unknown kind of connection")
}

// certIdentity checks a verified certificate against the members and the
// trust store. leaf is nil for a REST caller (only its fingerprint travels;
// its role and name are then the trust store's).
func (s *Server) certIdentity(ctx context.Context, fp string, leaf *x509.Certificate) (identity, error) {
	var role pki.Role
	var name string
	if leaf != nil {
		var err error
		if role, name, err = pki.RoleOf(leaf); err != nil {
			return identity{}, status.Errorf(codes.Unauthenticated, "certificate: %v", err)
		}
	}
	id, err := s.checkCert(fp, role, name)
	if status.Code(err) == codes.Unauthenticated && !s.cl.IsLeader() {
		// A certificate issued a moment ago may not have reached this
		// member yet: catch up with the leader once.
		s.catchUp(ctx)
		id, err = s.checkCert(fp, role, name)
	}
	return id, err
}

// checkCert decides on a certificate by its fingerprint, role and name
// (both "" to take them from the trust store).
func (s *Server) checkCert(fp string, role pki.Role, name string) (identity, error) {
	e := s.fsm.Trust(fp)
	if e.GetRevoked() {
		return identity{}, status.Errorf(codes.Unauthenticated, "the certificate of %q (%s) was revoked at %s",
			e.GetName(), shortFingerprint(fp), time.Unix(e.GetRevokedUnix(), 0).UTC().Format(time.RFC3339))
	}
	if role == "" {
		role, name = pki.Role(e.GetRole()), e.GetName()
	}
	switch {
	case role == pki.RoleNode:
		// Members: a node certificate is good while its holder is a member
		// (the one issued at bootstrap predates the trust store).
		if _, err := s.fsm.Node(name); err != nil {
			return identity{}, status.Errorf(codes.Unauthenticated, "node certificate of %q: not a member of this cluster", name)
		}
		return identity{kind: callerMember, name: name, fingerprint: fp}, nil
	case e == nil:
		return identity{}, status.Errorf(codes.Unauthenticated,
			"certificate of %q (%s) is not in the cluster's trust store: add the remote again with a new token", name, shortFingerprint(fp))
	}
	return identity{kind: callerClient, name: name, fingerprint: fp, grant: e.GetGrant()}, nil
}

func shortFingerprint(fp string) string {
	h := strings.TrimPrefix(fp, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// authorize checks that id may call method with req (nil for a stream
// before its first message).
func (s *Server) authorize(id identity, method string, req proto.Message) error {
	r, ok := rules[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not open to anyone", method)
	}
	if r.access == accessOpen {
		return nil
	}
	switch id.kind {
	case callerNone:
		return errNoCertificate
	case callerMember:
		return nil
	case callerLocal:
		if r.access == accessMember {
			return status.Errorf(codes.PermissionDenied, "%s is for cluster members only", method)
		}
		return nil
	}
	// Clients.
	if r.access == accessMember {
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: it is for cluster members only", id, method)
	}
	g := id.grant
	if g == nil {
		return nil
	}
	switch {
	case r.access == accessAdmin:
		return status.Errorf(codes.PermissionDenied, "%s may not call %s: it administers the cluster", id, method)
	case r.access == accessWrite && g.GetReadOnly():
		return status.Errorf(codes.PermissionDenied, "%s is read-only: it may not call %s", id, method)
	}
	if req == nil || r.containers == nil {
		return nil
	}
	for _, name := range r.containers(req) {
		if !granted(g, name) {
			return status.Errorf(codes.PermissionDenied, "%s may not touch container %q (granted: %s)", id, name, grantString(g))
		}
	}
	if cr, ok := req.(*shoalv1.CreateContainerRequest); ok {
		if len(cr.GetDevices()) > 0 {
			return status.Errorf(codes.PermissionDenied, "%s may not add devices (they reach the host's files and devices)", id)
		}
		if p := cr.GetProfiles(); len(p) > 1 || len(p) == 1 && p[0] != "default" {
			return status.Errorf(codes.PermissionDenied, "%s may only apply the default profile", id)
		}
		for _, k := range restrictedPrivileges {
			if v := cr.GetConfig()[k]; v != "" && v != "false" {
				return status.Errorf(codes.PermissionDenied, "%s may not set %s", id, k)
			}
		}
	}
	if ur, ok := req.(*shoalv1.UpdateContainerRequest); ok {
		if len(ur.GetSetDevices()) > 0 || len(ur.GetRemoveDevices()) > 0 {
			return status.Errorf(codes.PermissionDenied, "%s may not change devices (they reach the host's files and devices)", id)
		}
		if ur.GetSetProfiles() {
			return status.Errorf(codes.PermissionDenied, "%s may not change a container's profiles", id)
		}
		for _, k := range restrictedPrivileges {
			if v, set := ur.GetSet()[k]; set && v != "false" {
				return status.Errorf(codes.PermissionDenied, "%s may not set %s", id, k)
			}
		}
	}
	return nil
}

// granted reports whether a grant covers the container name.
func granted(g *shoalv1.Grant, name string) bool {
	if g == nil || len(g.GetContainerPrefixes()) == 0 {
		return true
	}
	for _, p := range g.GetContainerPrefixes() {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func grantString(g *shoalv1.Grant) string {
	var parts []string
	if len(g.GetContainerPrefixes()) > 0 {
		parts = append(parts, "containers "+strings.Join(g.GetContainerPrefixes(), "*, ")+"*")
	} else {
		parts = append(parts, "all containers")
	}
	if g.GetReadOnly() {
		parts = append(parts, "read-only")
	}
	return strings.Join(parts, ", ")
}

// visible reports whether a restricted client may see an operation or
// event about resource of the given kind ("container-…" kinds only).
// Operations name their container "containers/NAME", lifecycle events
// "NAME" or "NAME/SNAPSHOT".
func visible(g *shoalv1.Grant, kind, resource string) bool {
	return g == nil || strings.HasPrefix(kind, "container") && granted(g, strings.TrimPrefix(resource, "containers/"))
}

// filter trims a response to what a restricted client may see.
func filter(id identity, resp any) (any, error) {
	g := id.grant
	if g == nil {
		return resp, nil
	}
	switch r := resp.(type) {
	case *shoalv1.ListContainersResponse:
		kept := r.Containers[:0]
		for _, c := range r.Containers {
			if granted(g, c.GetContainer().GetName()) {
				kept = append(kept, c)
			}
		}
		r.Containers = kept
	case *shoalv1.ListOperationsResponse:
		kept := r.Operations[:0]
		for _, o := range r.Operations {
			if visible(g, o.GetKind(), o.GetResource()) {
				kept = append(kept, o)
			}
		}
		r.Operations = kept
	case interface{ GetOperation() *shoalv1.Operation }:
		if o := r.GetOperation(); o != nil && !visible(g, o.GetKind(), o.GetResource()) {
			return nil, status.Errorf(codes.NotFound, "operation %q not found", o.GetId())
		}
	}
	return resp, nil
}

// authUnary is the unary half of the table's enforcement.
func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	id, err := s.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	m, _ := req.(proto.Message)
	if err := s.authorize(id, info.FullMethod, m); err != nil {
		return nil, err
	}
	if c, ok := req.(*shoalv1.CancelOperationRequest); ok && id.grant != nil {
		// Cancelling acts: check the operation is the client's first.
		if _, err := s.visibleOperation(ctx, id, c.GetId()); err != nil {
			return nil, err
		}
	}
	ctx, done := s.track(ctx, id)
	defer done()
	resp, err := h(context.WithValue(ctx, identityKey{}, id), req)
	if err != nil {
		// A call that succeeded stands (a renewal revokes the very
		// certificate it came with); a failed one says why it was cut.
		return nil, revokedErr(ctx, err)
	}
	return filter(id, resp)
}

func (s *Server) visibleOperation(ctx context.Context, id identity, opID string) (*shoalv1.Operation, error) {
	resp, err := s.GetOperation(ctx, &shoalv1.GetOperationRequest{Id: opID})
	if err != nil {
		return nil, err
	}
	if _, err := filter(id, resp); err != nil {
		return nil, err
	}
	return resp.GetOperation(), nil
}

// authStream is the streaming half: the stream is checked when it opens
// and, for container-scoped methods, on its first message; what it sends
// to a restricted client is filtered.
func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	id, err := s.authenticate(ss.Context())
	if err != nil {
		return err
	}
	if err := s.authorize(id, info.FullMethod, nil); err != nil {
		return err
	}
	ctx, done := s.track(ss.Context(), id)
	defer done()
	err = h(srv, &authedStream{ServerStream: ss, ctx: context.WithValue(ctx, identityKey{}, id), s: s, id: id, method: info.FullMethod})
	return revokedErr(ctx, err)
}

// authedStream checks a stream's first message and filters what it sends.
type authedStream struct {
	grpc.ServerStream
	ctx     context.Context
	s       *Server
	id      identity
	method  string
	checked bool
}

func (a *authedStream) Context() context.Context { return a.ctx }

func (a *authedStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if !a.checked {
		a.checked = true
		pm, _ := m.(proto.Message)
		return a.s.authorize(a.id, a.method, pm)
	}
	return nil
}

func (a *authedStream) SendMsg(m any) error {
	if g := a.id.grant; g != nil {
		switch r := m.(type) {
		case *shoalv1.StreamEventsResponse:
			e := r.GetEvent()
			kind := e.GetAction()
			if e.GetOperation() != nil {
				kind = e.GetOperation().GetKind()
			}
			if !visible(g, kind, e.GetResource()) {
				return nil
			}
		case *shoalv1.WatchOperationResponse:
			if o := r.GetOperation(); !visible(g, o.GetKind(), o.GetResource()) {
				return status.Errorf(codes.NotFound, "operation %q not found", o.GetId())
			}
		}
	}
	return a.ServerStream.SendMsg(m)
}

// cutError is the cause of a call cut because its certificate was revoked
// (or its member removed) while it ran; it says why.
type cutError string

func (e cutError) Error() string { return string(e) }

// revokedErr turns the error of a call cut by revocation into an honest
// Unauthenticated.
// Handlers that end quietly when their context does (event streams) are
// covered too: a cut call never looks like a clean end.
func revokedErr(ctx context.Context, err error) error {
	var cut cutError
	if errors.As(context.Cause(ctx), &cut) {
		return status.Error(codes.Unauthenticated, cut.Error())
	}
	return err
}

// calls tracks the open calls of certificate holders, so that a
// revocation ends them.
type calls struct {
	mu   sync.Mutex
	open map[*openCall]struct{}
}

type openCall struct {
	id     identity
	cancel context.CancelCauseFunc
}

// track registers a call for re-checks while it runs; done unregisters it.
func (s *Server) track(ctx context.Context, id identity) (context.Context, func()) {
	if id.fingerprint == "" {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c := &openCall{id: id, cancel: cancel}
	s.calls.mu.Lock()
	if s.calls.open == nil {
		s.calls.open = map[*openCall]struct{}{}
	}
	s.calls.open[c] = struct{}{}
	s.calls.mu.Unlock()
	return ctx, func() {
		s.calls.mu.Lock()
		delete(s.calls.open, c)
		s.calls.mu.Unlock()
		cancel(nil)
	}
}

// recheck ends the open calls whose certificate is no longer good.
func (s *Server) recheck() {
	s.calls.mu.Lock()
	open := make([]*openCall, 0, len(s.calls.open))
	for c := range s.calls.open {
		open = append(open, c)
	}
	s.calls.mu.Unlock()
	for _, c := range open {
		if _, err := s.checkCert(c.id.fingerprint, c.id.role(), c.id.name); err != nil {
			s.log.Info("ending a call: its certificate is no longer trusted", "caller", c.id.String(), "reason", status.Convert(err).Message())
			c.cancel(cutError(status.Convert(err).Message()))
		}
	}
}

// watchRevocations re-checks open calls when the trust store or the
// members change, and every second in case a change was missed.
func (s *Server) watchRevocations(ctx context.Context) {
	changes := s.fsm.Subscribe()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-changes:
			if c.Kind != "trust" && c.Kind != "trust-revoked" && c.Kind != "node" && c.Kind != "resync" {
				continue
			}
		case <-t.C:
		}
		s.recheck()
	}
}
