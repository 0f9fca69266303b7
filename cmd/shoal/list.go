package main

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoal-dev/shoal/cluster"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// column is one column of shoal list: its header and how a container
// fills it.
type column struct {
	header string
	value  func(*shoalv1.ContainerInfo) string
}

// listColumns are LXD's column letters that Shoal has the data for.
var listColumns = map[rune]column{
	'n': {"NAME", func(ct *shoalv1.ContainerInfo) string { return ct.GetContainer().GetName() }},
	's': {"STATE", func(ct *shoalv1.ContainerInfo) string { return strings.ToUpper(ct.GetState().GetStatus()) }},
	'4': {"IPV4", func(ct *shoalv1.ContainerInfo) string { return strings.Join(ct.GetState().GetIpv4(), ",") }},
	't': {"TYPE", func(*shoalv1.ContainerInfo) string { return "CONTAINER" }},
	'S': {"SNAPSHOTS", func(ct *shoalv1.ContainerInfo) string { return fmt.Sprint(len(ct.GetContainer().GetSnapshots())) }},
	'L': {"LOCATION", func(ct *shoalv1.ContainerInfo) string { return ct.GetContainer().GetNode() }},
	'P': {"PROFILES", func(ct *shoalv1.ContainerInfo) string { return strings.Join(ct.GetContainer().GetProfiles(), ",") }},
	'b': {"STORAGE POOL", func(ct *shoalv1.ContainerInfo) string { return ct.GetContainer().GetPool() }},
	'c': {"CREATED AT", func(ct *shoalv1.ContainerInfo) string { return since(ct.GetContainer().GetCreatedAtUnixNano()) }},
	'f': {"BASE IMAGE", func(ct *shoalv1.ContainerInfo) string {
		fp := ct.GetContainer().GetImageFingerprint()
		if len(fp) > 12 {
			fp = fp[:12]
		}
		return fp
	}},
	'F': {"BASE IMAGE", func(ct *shoalv1.ContainerInfo) string { return ct.GetContainer().GetImageFingerprint() }},
	'p': {"PID", func(ct *shoalv1.ContainerInfo) string { return nonZero(ct.GetState().GetPid(), itoa) }},
	'N': {"PROCESSES", func(ct *shoalv1.ContainerInfo) string { return nonZero(ct.GetState().GetProcesses(), itoa) }},
	'm': {"MEMORY USAGE", func(ct *shoalv1.ContainerInfo) string { return nonZero(ct.GetState().GetMemoryBytes(), humanBytes) }},
	'D': {"DISK USAGE", func(ct *shoalv1.ContainerInfo) string { return nonZero(ct.GetState().GetDiskBytes(), humanBytes) }},
	'u': {"CPU USAGE", func(ct *shoalv1.ContainerInfo) string {
		return nonZero(ct.GetState().GetCpuNanoseconds(), func(ns int64) string { return fmt.Sprintf("%ds", ns/1e9) })
	}},
}

// missingColumns are LXD's letters whose data Shoal does not have.
var missingColumns = map[rune]string{
	'6': "IPv6: Shoal reports no IPv6 addresses",
	'l': "last used: Shoal does not record it",
	'a': "architecture: Shoal does not record it per container",
	'd': "description: containers have none in Shoal",
	'e': "project: Shoal has no projects",
	'M': "memory usage %: Shoal reports no memory total per container",
}

// columnLetters lists the letters -c takes, for errors and help.
const columnLetters = "n name, s state, 4 IPv4, t type, S snapshots, L location, P profiles, b storage pool, c created at, " +
	"f image (short), F image, p PID, N processes, m memory, D disk, u CPU; or a config key, KEY[:HEADER]"

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func nonZero(v int64, f func(int64) string) string {
	if v == 0 {
		return ""
	}
	return f(v)
}

// defaultColumns are shoal list's columns without -c.
var defaultColumns = []column{
	listColumns['n'], listColumns['s'], listColumns['4'],
	{"IMAGE", imageName}, listColumns['S'],
	{"NODE", func(ct *shoalv1.ContainerInfo) string { return ct.GetContainer().GetNode() }},
}

// imageName is the image a container was launched from: the alias or
// fingerprint the user gave, a fingerprint cut to 12 characters.
func imageName(ct *shoalv1.ContainerInfo) string {
	c := ct.GetContainer()
	img := c.GetImageSource()
	if img == "" || len(img) >= 12 && strings.HasPrefix(c.GetImageFingerprint(), img) {
		img = c.GetImageFingerprint()
	}
	if len(img) > 12 && strings.HasPrefix(c.GetImageFingerprint(), img) {
		img = img[:12]
	}
	return img
}

// parseColumns parses -c as LXD does: comma-separated entries; an entry
// without a '.' or ':' is a run of column letters, any other a config key
// ([config:]KEY[:HEADER]) read from the expanded config.
func parseColumns(spec string) ([]column, error) {
	var cols []column
	for _, entry := range strings.Split(spec, ",") {
		if entry == "" {
			return nil, fmt.Errorf("-c: empty column entry in %q (allowed: %s)", spec, columnLetters)
		}
		if strings.ContainsAny(entry, ".:") {
			col, err := configColumn(entry)
			if err != nil {
				return nil, err
			}
			cols = append(cols, col)
			continue
		}
		for _, r := range entry {
			if col, ok := listColumns[r]; ok {
				cols = append(cols, col)
				continue
			}
			if why, ok := missingColumns[r]; ok {
				return nil, fmt.Errorf("-c: column '%c' is not available (%s; allowed: %s)", r, why, columnLetters)
			}
			return nil, fmt.Errorf("-c: unknown column '%c' (allowed: %s)", r, columnLetters)
		}
	}
	return cols, nil
}

func configColumn(entry string) (column, error) {
	if strings.HasPrefix(entry, "devices:") {
		return column{}, fmt.Errorf("-c: %q: device columns are not supported (allowed: %s)", entry, columnLetters)
	}
	key, header, _ := strings.Cut(strings.TrimPrefix(entry, "config:"), ":")
	if key == "" || strings.Contains(header, ":") {
		return column{}, fmt.Errorf("-c: %q is not a config column (want [config:]KEY[:HEADER], e.g. user.role:ROLE)", entry)
	}
	if header == "" {
		header = strings.ToUpper(key)
	}
	return column{header, func(ct *shoalv1.ContainerInfo) string {
		return cluster.ExpandedConfig(ct.GetContainer())[key]
	}}, nil
}

// statuses are the container states a status= filter takes.
var statuses = []string{"running", "stopped", "frozen", "starting", "stopping", "freezing", "thawed", "aborting", "error", "unknown"}

const filterKeys = "name, status (or state), location, type, config.KEY, user.KEY"

// parseFilters parses list's arguments as LXD does: KEY=VALUE compares a
// field or config key, a bare word matches names (as a regular expression
// over the whole name, or as a prefix). A container must match them all.
func parseFilters(args []string) (func(*shoalv1.ContainerInfo) bool, error) {
	var fs []func(*shoalv1.ContainerInfo) bool
	for _, arg := range args {
		key, value, ok := strings.Cut(arg, "=")
		if !ok {
			fs = append(fs, nameFilter(arg))
			continue
		}
		f, err := fieldFilter(arg, key, value)
		if err != nil {
			return nil, err
		}
		fs = append(fs, f)
	}
	return func(ct *shoalv1.ContainerInfo) bool {
		for _, f := range fs {
			if !f(ct) {
				return false
			}
		}
		return true
	}, nil
}

// nameFilter matches a name that starts with word, or that word, as a
// regular expression anchored at both ends unless it says ^ or $ itself,
// matches.
func nameFilter(word string) func(*shoalv1.ContainerInfo) bool {
	expr := word
	if !strings.ContainsAny(expr, "^$") {
		expr = "^" + expr + "$"
	}
	re, err := regexp.Compile(expr)
	return func(ct *shoalv1.ContainerInfo) bool {
		name := ct.GetContainer().GetName()
		return strings.HasPrefix(name, word) || err == nil && re.MatchString(name)
	}
}

func fieldFilter(arg, key, value string) (func(*shoalv1.ContainerInfo) bool, error) {
	switch {
	case key == "name":
		return nameFilter(value), nil
	case key == "status" || key == "state":
		for _, s := range statuses {
			if strings.EqualFold(s, value) {
				return func(ct *shoalv1.ContainerInfo) bool { return strings.EqualFold(ct.GetState().GetStatus(), value) }, nil
			}
		}
		return nil, fmt.Errorf("filter %q: %q is not a state (allowed: %s)", arg, value, strings.Join(statuses, ", "))
	case key == "location":
		return func(ct *shoalv1.ContainerInfo) bool { return ct.GetContainer().GetNode() == value }, nil
	case key == "type":
		switch strings.ToLower(value) {
		case "container":
			return func(*shoalv1.ContainerInfo) bool { return true }, nil
		case "virtual-machine":
			return func(*shoalv1.ContainerInfo) bool { return false }, nil
		}
		return nil, fmt.Errorf("filter %q: %q is not a type (allowed: container, virtual-machine)", arg, value)
	case strings.HasPrefix(key, "config.") && len(key) > len("config."), strings.HasPrefix(key, "user.") && len(key) > len("user."):
		k := strings.TrimPrefix(key, "config.")
		return func(ct *shoalv1.ContainerInfo) bool { return cluster.ExpandedConfig(ct.GetContainer())[k] == value }, nil
	case strings.Contains(key, "."):
		return nil, fmt.Errorf("filter %q: unknown key %q (allowed: %s; for a config key write config.%s)", arg, key, filterKeys, key)
	}
	return nil, fmt.Errorf("filter %q: unknown key %q (allowed: %s)", arg, key, filterKeys)
}

const listLong = `List containers.

Filters (all must match), as in LXD:
  WORD               names starting with WORD, or matching it as a regular expression
  name=REGEX         the same
  status=running     a state: ` + "running, stopped, frozen, error, unknown, ..." + `
  location=MEMBER    containers on that member
  type=container     every Shoal instance is a container
  config.KEY=VALUE   the effective config (profiles, then the container's own)
  user.KEY=VALUE     short for config.user.KEY=VALUE

Columns (-c), LXD's letters: ` + columnLetters + `.
The default is NAME, STATE, IPV4, IMAGE, SNAPSHOTS, NODE.
json and yaml print the whole records of the matching containers.`

func (a *app) listCmd() *cobra.Command {
	var format, columns string
	cmd := &cobra.Command{
		Use: "list [FILTER...]", Aliases: []string{"ls"}, Short: "List containers", Long: listLong, Args: cobra.ArbitraryArgs,
		Example: `  shoal list -c ns4L --format csv status=running
  shoal list web location=node2 user.role=db`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkTableFormat(format); err != nil {
				return err
			}
			cols := defaultColumns
			if cmd.Flags().Changed("columns") {
				var err error
				if cols, err = parseColumns(columns); err != nil {
					return err
				}
			}
			match, err := parseFilters(args)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			resp, err := c.Containers.ListContainers(cmd.Context(), &shoalv1.ListContainersRequest{})
			if err != nil {
				return convert(err)
			}
			var cts []*shoalv1.ContainerInfo
			for _, ct := range resp.GetContainers() {
				if match(ct) {
					cts = append(cts, ct)
				}
			}
			if format == "json" || format == "yaml" {
				return printData(os.Stdout, format, &shoalv1.ListContainersResponse{Containers: cts})
			}
			header := make([]string, len(cols))
			for i, col := range cols {
				header[i] = col.header
			}
			rows := make([][]string, len(cts))
			for i, ct := range cts {
				rows[i] = make([]string, len(cols))
				for j, col := range cols {
					rows[i][j] = col.value(ct)
				}
			}
			return printTable(os.Stdout, format, header, rows)
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "output format: "+tableFormats)
	cmd.Flags().StringVarP(&columns, "columns", "c", "", "columns, LXD's letters (e.g. ns4L; see --help)")
	return cmd
}
