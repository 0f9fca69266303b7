// Command images times an image pull from a simplestreams server (`shoal
// image copy imgs:IMAGE local:`: the daemon downloads the metadata tarball
// and the squashfs, checks them, unsquashes and packs the image into its
// store) beside the floor measured in the same run: curl fetching the same
// two files from the same server. The image is busybox with a file of
// random bytes added (-mib), published from a container. It prints
// figures; it asserts nothing.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/tests/harness"
)

var servingRE = regexp.MustCompile(`Serving .* on (https://\S+) \(certificate`)

func main() {
	n := flag.Int("n", 5, "pulls (median reported)")
	mib := flag.Int("mib", 200, "MiB of random data in the image")
	flag.Parse()
	t := &harness.Program{}
	defer t.Close()
	if missing := harness.Missing(); len(missing) > 0 {
		fmt.Fprintln(os.Stderr, "bench needs:", strings.Join(missing, ", "))
		os.Exit(1)
	}
	root, _ := os.Getwd()
	bin := harness.BuildTemp(t, root)
	cfg, _ := os.MkdirTemp("", "shoal-bench-cfg-")
	defer os.RemoveAll(cfg)
	os.Setenv("XDG_CONFIG_HOME", cfg)
	d := harness.StartDaemon(t, bin)
	d.MustShoal("image", "build", "busybox")
	d.MustShoal("launch", "busybox", "src")
	d.MustShoal("exec", "src", "--", "dd", "if=/dev/urandom", "of=/blob", "bs=1M", fmt.Sprintf("count=%d", *mib))
	d.MustShoal("stop", "src")
	d.MustShoal("publish", "src", "--alias", "big")
	d.MustShoal("delete", "src")

	tree, _ := os.MkdirTemp("", "shoal-bench-tree-")
	defer os.RemoveAll(tree)
	serve := exec.Command(filepath.Join(bin, "shoal"), "image", "serve", tree, "big", "--listen", "127.0.0.1:0")
	serve.Env = append(os.Environ(), "SHOAL_SOCKET="+d.Socket)
	out, _ := serve.StdoutPipe()
	if err := serve.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	defer func() { serve.Process.Signal(os.Interrupt); serve.Wait() }()
	url := ""
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
			url = m[1]
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if url == "" {
		t.Fatalf("image serve did not start")
	}
	d.MustShoal("remote", "add", "imgs", url, "--protocol", "simplestreams", "--accept-certificate")
	files, _ := filepath.Glob(filepath.Join(tree, "images", "*", "*"))
	var size int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			size += st.Size()
		}
	}
	fmt.Printf("# image pull from a simplestreams tree served by `shoal image serve` on this machine: %.1f MiB (lxd.tar.xz + root.squashfs), median of %d\n", float64(size)/(1<<20), *n)

	var pulls, curls []float64
	for i := 0; i < *n; i++ {
		start := time.Now()
		for _, f := range files {
			rel, _ := filepath.Rel(tree, f)
			if o, err := exec.Command("curl", "-sSfk", "-o", "/dev/null", url+"/"+filepath.ToSlash(rel)).CombinedOutput(); err != nil {
				t.Fatalf("curl: %v %s", err, o)
			}
		}
		curls = append(curls, time.Since(start).Seconds()*1000)

		start = time.Now()
		d.MustShoal("image", "copy", "imgs:big", "local:")
		pulls = append(pulls, time.Since(start).Seconds()*1000)
		// Forget the pulled copy so the next pull downloads again.
		var resp struct {
			Images []struct {
				Fingerprint string            `json:"fingerprint"`
				Properties  map[string]string `json:"properties"`
			} `json:"images"`
		}
		json.Unmarshal([]byte(d.MustShoal("image", "list", "--format", "json")), &resp)
		for _, img := range resp.Images {
			if img.Properties["source.server"] != "" {
				d.MustShoal("image", "delete", img.Fingerprint)
			}
		}
	}
	c, p := median(curls), median(pulls)
	fmt.Printf("curl of the two files (floor)      %7.0f ms  %6.1f MiB/s\n", c, float64(size)/(1<<20)/(c/1000))
	fmt.Printf("shoal image copy imgs:big local:   %7.0f ms  %6.1f MiB/s  (%.0f%% of curl's rate; includes the checks, unsquashfs and packing into the store)\n",
		p, float64(size)/(1<<20)/(p/1000), 100*c/p)
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}
