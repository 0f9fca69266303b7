package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

// TestOpenAPIRoutes calls every route the OpenAPI file documents on a live
// daemon's REST socket, with made-up names in the path and an empty body:
// each must reach its handler — an answer from Shoal (a validation error,
// NotFound naming the made-up resource, a stream that starts), never the
// gateway's own "no such route" (404 "Not Found"), 405, or 501. The routes
// are read from the file, so a route added to it is checked too.
func TestOpenAPIRoutes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "proto", "gen", "openapi", "shoal.swagger.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	// Routes that act on the daemon itself even with an empty body, and
	// whose handler the rest of the suite exercises.
	skip := map[string]string{
		"POST /v1/cluster/trust/renew": "renews this member's certificate (TestTrust* call it)",
	}
	d := startDaemon(t)
	hc := harness.UnixHTTP(d.RESTSocket())
	param := regexp.MustCompile(`\{[^}]+\}`)
	var routes []string
	for p, methods := range doc.Paths {
		for m := range methods {
			routes = append(routes, strings.ToUpper(m)+" "+p)
		}
	}
	sort.Strings(routes)
	if len(routes) < 50 {
		t.Fatalf("the OpenAPI file documents %d routes: expected the whole API", len(routes))
	}
	checked := 0
	for _, r := range routes {
		if why, ok := skip[r]; ok {
			t.Logf("%s: not called: %s", r, why)
			continue
		}
		method, p, _ := strings.Cut(r, " ")
		path := param.ReplaceAllString(p, "nosuch-"+harness.RandHex(3))
		var body io.Reader
		if method != http.MethodGet && method != http.MethodDelete {
			body = strings.NewReader("{}")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, method, "http://shoal"+path, body)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				t.Logf("%s: no answer within 5 s (a stream, or a wait): reached", r)
				checked++
				continue
			}
			t.Errorf("%s: %v", r, err)
			continue
		}
		var got bytes.Buffer
		_, rerr := io.CopyN(&got, resp.Body, 4096)
		resp.Body.Close()
		cancel()
		if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, context.DeadlineExceeded) {
			t.Logf("%s: reading the answer: %v", r, rerr)
		}
		// A status, or a stream's first message carrying one.
		var st struct {
			Message string `json:"message"`
			Error   *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(got.Bytes(), &st)
		if st.Error != nil {
			st.Message = st.Error.Message
		}
		switch {
		case resp.StatusCode == http.StatusNotFound && (st.Message == "Not Found" || st.Message == ""):
			t.Errorf("%s: 404 from the gateway, not a handler: the route is not registered (%s)", r, strings.TrimSpace(got.String()))
		case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented:
			t.Errorf("%s: %d %s", r, resp.StatusCode, strings.TrimSpace(got.String()))
		default:
			checked++
			t.Logf("%s: %d %.120s", r, resp.StatusCode, strings.TrimSpace(got.String()))
		}
	}
	t.Logf("%d of %d documented routes reach their handler", checked, len(routes))
}
