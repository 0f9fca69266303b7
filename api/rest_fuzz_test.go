package api

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shoal-dev/shoal/internal/config"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// FuzzRESTBody feeds arbitrary bodies to the REST gateway's JSON decoder
// for the requests a restricted client sends most (create, update), then
// to the same validation and authorization the handlers run. Properties:
// no panic; what decodes encodes back to the same message; a client
// granted only "web-*" is never let through to another container or to a
// privileged or nested one, whatever spelling the JSON used.
func FuzzRESTBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"web-1","image":"busybox"}`,
		`{"name":"web-1","image":"busybox","config":{"security.privileged":"true"}}`,
		`{"name":"web-1","image":"busybox","config":{"security.privileged":"TRUE","limits.memory":"256MiB"}}`,
		`{"name":"db-1","image":"busybox","no_start":true,"pool":"default"}`,
		`{"name":"web-1","set":{"security.nesting":"yes"},"unset":["limits.cpu"]}`,
		`{"name":"web\u002d1","image":"b"}`, `{"name":"web-1","name":"db-1","image":"b"}`,
		`{"name":"web-1","config":{"security.privileged":1}}`, `{"unknown":1}`, `[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	m := restMarshaler()
	s := &Server{}
	web := identity{kind: callerClient, name: "ci", fingerprint: "sha256:cc", grant: &shoalv1.Grant{ContainerPrefixes: []string{"web-"}}}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, tc := range []struct {
			method string
			msg    proto.Message
		}{
			{"/shoal.v1.ContainerService/CreateContainer", &shoalv1.CreateContainerRequest{}},
			{"/shoal.v1.ContainerService/UpdateContainer", &shoalv1.UpdateContainerRequest{}},
		} {
			if err := m.NewDecoder(bytes.NewReader(body)).Decode(tc.msg); err != nil {
				continue
			}
			out, err := m.Marshal(tc.msg)
			if err != nil {
				t.Fatalf("%s: decoded %q, cannot encode it again: %v", tc.method, body, err)
			}
			back := tc.msg.ProtoReflect().New().Interface()
			if err := m.Unmarshal(out, back); err != nil || !proto.Equal(back, tc.msg) {
				t.Fatalf("%s: %q decodes to %v, which encodes to %s and decodes to %v (%v)", tc.method, body, tc.msg, out, back, err)
			}
			if s.authorize(web, tc.method, tc.msg) != nil {
				continue
			}
			var name string
			var cfg map[string]string
			switch r := tc.msg.(type) {
			case *shoalv1.CreateContainerRequest:
				name, cfg = r.GetName(), r.GetConfig()
				if config.ValidateName("name", name) != nil || config.Validate(cfg) != nil {
					continue // the handler refuses it next
				}
			case *shoalv1.UpdateContainerRequest:
				name, cfg = r.GetName(), r.GetSet()
				if config.Validate(cfg) != nil {
					continue
				}
			}
			if !strings.HasPrefix(name, "web-") {
				t.Fatalf("%s: a client granted web-* may act on %q (body %q)", tc.method, name, body)
			}
			for _, k := range restrictedPrivileges {
				if config.Bool(cfg, k) {
					t.Fatalf("%s: a restricted client may set %s=%q (body %q)", tc.method, k, cfg[k], body)
				}
			}
		}
	})
}
