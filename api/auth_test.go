package api

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Every method of every Shoal service must have an entry in the table: a
// new RPC without one is refused to everybody, and this test says so.
func TestEveryMethodHasARule(t *testing.T) {
	n := 0
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if fd.Package() != "shoal.v1" {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				m := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(j).Name())
				n++
				if _, ok := rules[m]; !ok {
					t.Errorf("%s has no authorization rule", m)
				}
			}
		}
		return true
	})
	if n < 40 {
		t.Fatalf("found only %d methods: is the registry loaded?", n)
	}
}

func TestAuthorize(t *testing.T) {
	s := &Server{}
	local := identity{kind: callerLocal, name: "local"}
	member := identity{kind: callerMember, name: "n2", fingerprint: "sha256:aa"}
	client := identity{kind: callerClient, name: "laptop", fingerprint: "sha256:bb"}
	web := identity{kind: callerClient, name: "ci", fingerprint: "sha256:cc", grant: &shoalv1.Grant{ContainerPrefixes: []string{"web-"}}}
	ro := identity{kind: callerClient, name: "ro", fingerprint: "sha256:dd", grant: &shoalv1.Grant{ReadOnly: true}}
	anon := identity{}
	const (
		apply   = "/shoal.v1.ClusterService/Apply"
		restore = "/shoal.v1.MigrationService/RestoreContainer"
		create  = "/shoal.v1.ContainerService/CreateContainer"
		list    = "/shoal.v1.ContainerService/ListContainers"
		exec    = "/shoal.v1.ContainerService/Exec"
		token   = "/shoal.v1.ClusterService/CreateJoinToken"
		join    = "/shoal.v1.ClusterService/Join"
		copyCt  = "/shoal.v1.ContainerService/CopyContainer"
		update  = "/shoal.v1.ContainerService/UpdateContainer"
	)
	execOn := func(name string) proto.Message {
		return &shoalv1.ExecRequest{Msg: &shoalv1.ExecRequest_Start{Start: &shoalv1.ExecStart{Name: name}}}
	}
	cases := []struct {
		name   string
		id     identity
		method string
		req    proto.Message
		want   codes.Code
		msg    string // part of the message, when refused
	}{
		{"anonymous may join", anon, join, nil, codes.OK, ""},
		{"anonymous may not list", anon, list, nil, codes.Unauthenticated, "client certificate"},
		{"member applies", member, apply, nil, codes.OK, ""},
		{"member restores", member, restore, nil, codes.OK, ""},
		{"client may not apply", client, apply, nil, codes.PermissionDenied, "members only"},
		{"client may not restore", client, restore, nil, codes.PermissionDenied, "members only"},
		{"local may not apply", local, apply, nil, codes.PermissionDenied, "members only"},
		{"local creates tokens", local, token, nil, codes.OK, ""},
		{"client creates tokens", client, token, nil, codes.OK, ""},
		{"restricted may not create tokens", web, token, nil, codes.PermissionDenied, "administers"},
		{"restricted creates in its grant", web, create, &shoalv1.CreateContainerRequest{Name: "web-1"}, codes.OK, ""},
		{"restricted may not create outside", web, create, &shoalv1.CreateContainerRequest{Name: "db-1"}, codes.PermissionDenied, `"db-1"`},
		{"restricted may not be privileged", web, create, &shoalv1.CreateContainerRequest{Name: "web-2",
			Config: map[string]string{"security.privileged": "true"}}, codes.PermissionDenied, "security.privileged"},
		{"restricted may not turn on nesting", web, update, &shoalv1.UpdateContainerRequest{Name: "web-2",
			Set: map[string]string{"security.nesting": "1"}}, codes.PermissionDenied, "security.nesting"},
		{"restricted copies within", web, copyCt, &shoalv1.CopyContainerRequest{Source: "web-1", Name: "web-2"}, codes.OK, ""},
		{"restricted may not copy out", web, copyCt, &shoalv1.CopyContainerRequest{Source: "db-1", Name: "web-2"}, codes.PermissionDenied, `"db-1"`},
		{"restricted execs within", web, exec, execOn("web-1"), codes.OK, ""},
		{"restricted may not exec outside", web, exec, execOn("db-1"), codes.PermissionDenied, `"db-1"`},
		{"stream open before its first message", web, exec, nil, codes.OK, ""},
		{"read-only lists", ro, list, nil, codes.OK, ""},
		{"read-only may not create", ro, create, &shoalv1.CreateContainerRequest{Name: "x"}, codes.PermissionDenied, "read-only"},
		{"read-only may not exec", ro, exec, execOn("x"), codes.PermissionDenied, "read-only"},
		{"unknown method", local, "/shoal.v1.ContainerService/Nope", nil, codes.PermissionDenied, "not open"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.authorize(c.id, c.method, c.req)
			if got := status.Code(err); got != c.want {
				t.Fatalf("authorize: %v, want %v", err, c.want)
			}
			if err != nil && !strings.Contains(status.Convert(err).Message(), c.msg) {
				t.Fatalf("message %q lacks %q", status.Convert(err).Message(), c.msg)
			}
		})
	}
}

func TestFilterRestricted(t *testing.T) {
	web := identity{kind: callerClient, grant: &shoalv1.Grant{ContainerPrefixes: []string{"web-"}}}
	ct := func(n string) *shoalv1.ContainerInfo {
		return &shoalv1.ContainerInfo{Container: &shoalv1.Container{Name: n}}
	}
	resp, err := filter(web, &shoalv1.ListContainersResponse{Containers: []*shoalv1.ContainerInfo{ct("web-1"), ct("db-1"), ct("web-2")}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range resp.(*shoalv1.ListContainersResponse).GetContainers() {
		names = append(names, c.GetContainer().GetName())
	}
	if strings.Join(names, ",") != "web-1,web-2" {
		t.Fatalf("filtered list: %v", names)
	}
	op := &shoalv1.GetOperationResponse{Operation: &shoalv1.Operation{Id: "x", Kind: "container-create", Resource: "containers/db-1"}}
	if _, err := filter(web, op); status.Code(err) != codes.NotFound {
		t.Fatalf("another container's operation: %v", err)
	}
	op.Operation.Kind = "image-build"
	op.Operation.Resource = "web-image"
	if _, err := filter(web, op); status.Code(err) != codes.NotFound {
		t.Fatalf("an image operation: %v", err)
	}
	op.Operation.Kind, op.Operation.Resource = "container-create", "containers/web-3"
	if _, err := filter(web, op); err != nil {
		t.Fatalf("its own operation: %v", err)
	}
	// Unrestricted callers see everything.
	if _, err := filter(identity{kind: callerClient}, &shoalv1.GetOperationResponse{Operation: &shoalv1.Operation{Kind: "image-build"}}); err != nil {
		t.Fatal(err)
	}
}
