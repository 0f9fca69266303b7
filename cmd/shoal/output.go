package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// formats are the values --format takes.
const formats = "table, json, yaml"

func checkFormat(f string) error {
	switch f {
	case "table", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--format: %q is not a format (allowed: %s)", f, formats)
}

// tableFormats are the values --format takes where the command prints
// through printTable (LXD's: csv has no header; compact is LXD's table
// without borders, which is what Shoal's table already is).
const tableFormats = "table, compact, csv, json, yaml"

func checkTableFormat(f string) error {
	switch f {
	case "table", "compact", "csv", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--format: %q is not a format (allowed: %s)", f, tableFormats)
}

// printTable prints rows as format says: table and compact aligned under
// a header, csv as RFC 4180 records without one.
func printTable(w io.Writer, format string, header []string, rows [][]string) error {
	switch format {
	case "table", "compact":
		table(w, header, rows)
		return nil
	case "csv":
		cw := csv.NewWriter(w)
		if err := cw.WriteAll(rows); err != nil {
			return err
		}
		return cw.Error()
	}
	return fmt.Errorf("--format: %q cannot print a table (allowed: table, compact, csv)", format)
}

// printData prints proto messages as JSON or YAML.
func printData(w io.Writer, format string, msgs any) error {
	b, err := marshalJSON(msgs)
	if err != nil {
		return err
	}
	if format == "json" {
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	out, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

func marshalJSON(v any) ([]byte, error) {
	opts := protojson.MarshalOptions{UseProtoNames: true}
	switch m := v.(type) {
	case proto.Message:
		return opts.Marshal(m)
	case []proto.Message:
		parts := make([]json.RawMessage, len(m))
		for i, x := range m {
			b, err := opts.Marshal(x)
			if err != nil {
				return nil, err
			}
			parts[i] = b
		}
		return json.MarshalIndent(parts, "", "  ")
	}
	return json.Marshal(v)
}

// table prints rows under a header, aligned.
func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func sortedMapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func humanBytes(b int64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%dB", b)
	}
	div, exp := int64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func since(unixNano int64) string {
	if unixNano == 0 {
		return ""
	}
	return time.Unix(0, unixNano).UTC().Format("2006-01-02 15:04:05 UTC")
}

// progress renders an operation's progress: a bar (or spinner) on a
// terminal, one plain line per new phase otherwise.
type progress struct {
	tty   bool
	bar   *progressbar.ProgressBar
	phase string
}

func newProgress() *progress {
	return &progress{tty: term.IsTerminal(int(os.Stderr.Fd()))}
}

func (p *progress) update(op *shoalv1.Operation) {
	pr := op.GetProgress()
	if pr.GetPhase() == "" {
		return
	}
	if !p.tty {
		if pr.GetPhase() != p.phase {
			p.phase = pr.GetPhase()
			fmt.Fprintf(os.Stderr, "%s: %s\n", op.GetKind(), p.phase)
		}
		return
	}
	if pr.GetPhase() != p.phase || p.bar == nil {
		p.finish()
		p.phase = pr.GetPhase()
		max := pr.GetTotal()
		if max <= 0 {
			max = -1
		}
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionSetDescription(p.phase),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
	}
	if pr.GetTotal() > 0 {
		p.bar.Set64(pr.GetDone())
	} else {
		p.bar.Add(1)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
}
