package main

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/shoal-dev/shoal/api/client"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// profileDoc is a profile as `profile show` prints and `profile edit`
// reads it (LXD's layout: devices carry their type among their keys).
type profileDoc struct {
	Name        string                       `yaml:"name"`
	Description string                       `yaml:"description"`
	Config      map[string]string            `yaml:"config"`
	Devices     map[string]map[string]string `yaml:"devices"`
	UsedBy      []string                     `yaml:"used_by,omitempty"`
}

// devicesDoc turns a devices map into LXD's layout.
func devicesDoc(devs map[string]*shoalv1.Device) map[string]map[string]string {
	out := map[string]map[string]string{}
	for name, d := range devs {
		m := map[string]string{"type": d.GetType()}
		for k, v := range d.GetConfig() {
			m[k] = v
		}
		out[name] = m
	}
	return out
}

// devicesFromDoc reads LXD's layout back.
func devicesFromDoc(doc map[string]map[string]string) (map[string]*shoalv1.Device, error) {
	out := map[string]*shoalv1.Device{}
	for name, m := range doc {
		d, err := deviceFromKV(name, m["type"], m)
		if err != nil {
			return nil, err
		}
		out[name] = d
	}
	return out, nil
}

// deviceFromKV builds a device of a type from KEY=VALUE keys (a "type"
// key among them is dropped).
func deviceFromKV(name, typ string, kv map[string]string) (*shoalv1.Device, error) {
	if typ == "" {
		return nil, fmt.Errorf("devices.%s.type: missing (want disk, unix-char or unix-block)", name)
	}
	cfg := map[string]string{}
	for k, v := range kv {
		if k != "type" {
			cfg[k] = v
		}
	}
	return &shoalv1.Device{Type: typ, Config: cfg}, nil
}

func profileToDoc(p *shoalv1.Profile) profileDoc {
	cfg := p.GetConfig()
	if cfg == nil {
		cfg = map[string]string{}
	}
	return profileDoc{Name: p.GetName(), Description: p.GetDescription(), Config: cfg, Devices: devicesDoc(p.GetDevices()), UsedBy: p.GetUsedBy()}
}

func (a *app) profileCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "profile", Short: "Manage profiles (config keys and devices containers apply in order)"}
	get := func(cmd *cobra.Command, c *client.Client, name string) (*shoalv1.Profile, error) {
		resp, err := c.Profiles.GetProfile(cmd.Context(), &shoalv1.GetProfileRequest{Name: name})
		if err != nil {
			return nil, convert(err)
		}
		return resp.GetProfile(), nil
	}
	update := func(cmd *cobra.Command, c *client.Client, req *shoalv1.UpdateProfileRequest) error {
		_, err := c.Profiles.UpdateProfile(cmd.Context(), req)
		return convert(err)
	}
	var format string
	list := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List profiles", Args: cobra.NoArgs,
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			resp, err := c.Profiles.ListProfiles(cmd.Context(), &shoalv1.ListProfilesRequest{})
			if err != nil {
				return convert(err)
			}
			if format != "table" {
				return printData(os.Stdout, format, resp)
			}
			var rows [][]string
			for _, p := range resp.GetProfiles() {
				rows = append(rows, []string{p.GetName(), p.GetDescription(), fmt.Sprint(len(p.GetUsedBy()))})
			}
			table(os.Stdout, []string{"NAME", "DESCRIPTION", "USED BY"}, rows)
			return nil
		}),
	}
	list.Flags().StringVarP(&format, "format", "f", "table", "output format: "+formats)
	show := &cobra.Command{
		Use: "show PROFILE", Short: "Show a profile (YAML)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			p, err := get(cmd, c, args[0])
			if err != nil {
				return err
			}
			return printYAML(profileToDoc(p))
		}),
	}
	create := &cobra.Command{
		Use: "create PROFILE [KEY=VALUE...]", Short: "Create a profile (config from the arguments, or a YAML document on stdin)", Args: cobra.MinimumNArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("config", args[1:])
			if err != nil {
				return err
			}
			p := &shoalv1.Profile{Name: args[0], Config: kv}
			if piped(os.Stdin) {
				in, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				if len(bytes.TrimSpace(in)) > 0 {
					if p, err = profileFromYAML(args[0], in); err != nil {
						return err
					}
				}
			}
			if _, err := c.Profiles.CreateProfile(cmd.Context(), &shoalv1.CreateProfileRequest{Profile: p}); err != nil {
				return convert(err)
			}
			fmt.Printf("Profile %s created\n", args[0])
			return nil
		}),
	}
	cp := &cobra.Command{
		Use: "copy PROFILE NEW", Aliases: []string{"cp"}, Short: "Copy a profile", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			p, err := get(cmd, c, args[0])
			if err != nil {
				return err
			}
			p.Name, p.UsedBy = args[1], nil
			_, err = c.Profiles.CreateProfile(cmd.Context(), &shoalv1.CreateProfileRequest{Profile: p})
			return convert(err)
		}),
	}
	rename := &cobra.Command{
		Use: "rename PROFILE NEW", Aliases: []string{"mv"}, Short: "Rename a profile (its containers follow)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Profiles.RenameProfile(cmd.Context(), &shoalv1.RenameProfileRequest{Name: args[0], NewName: args[1]})
			return convert(err)
		}),
	}
	del := &cobra.Command{
		Use: "delete PROFILE", Aliases: []string{"rm"}, Short: "Delete a profile no container uses", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			if _, err := c.Profiles.DeleteProfile(cmd.Context(), &shoalv1.DeleteProfileRequest{Name: args[0]}); err != nil {
				return convert(err)
			}
			fmt.Printf("Profile %s deleted\n", args[0])
			return nil
		}),
	}
	set := &cobra.Command{
		Use: "set PROFILE KEY=VALUE...", Short: "Set config keys (running containers using it follow, live where the key allows)", Args: cobra.MinimumNArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("config", args[1:])
			if err != nil {
				return err
			}
			return update(cmd, c, &shoalv1.UpdateProfileRequest{Name: args[0], Set: kv})
		}),
	}
	unset := &cobra.Command{
		Use: "unset PROFILE KEY...", Short: "Unset config keys", Args: cobra.MinimumNArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			return update(cmd, c, &shoalv1.UpdateProfileRequest{Name: args[0], Unset: args[1:]})
		}),
	}
	getKey := &cobra.Command{
		Use: "get PROFILE KEY", Short: "Print one config key", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			p, err := get(cmd, c, args[0])
			if err != nil {
				return err
			}
			fmt.Println(p.GetConfig()[args[1]])
			return nil
		}),
	}
	edit := &cobra.Command{
		Use: "edit PROFILE", Short: "Edit a profile as YAML in $EDITOR (or read the new one from stdin)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			p, err := get(cmd, c, args[0])
			if err != nil {
				return err
			}
			doc := profileToDoc(p)
			doc.UsedBy = nil
			cur, err := yaml.Marshal(doc)
			if err != nil {
				return err
			}
			next, err := editText(cur)
			if err != nil {
				return err
			}
			np, err := profileFromYAML(args[0], next)
			if err != nil {
				return err
			}
			return update(cmd, c, &shoalv1.UpdateProfileRequest{Name: args[0], Replace: true, Profile: np})
		}),
	}
	// Assigning profiles to containers, as LXD's profile add/remove/assign.
	assign := &cobra.Command{
		Use: "assign CONTAINER PROFILE[,PROFILE...]", Short: "Set a container's profiles (in order; '' for none)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			var list []string
			if args[1] != "" {
				list = strings.Split(args[1], ",")
			}
			return setProfiles(cmd, c, args[0], list)
		}),
	}
	addTo := &cobra.Command{
		Use: "add CONTAINER PROFILE", Short: "Apply a profile to a container (last)", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			if slices.Contains(ct.GetProfiles(), args[1]) {
				return fmt.Errorf("profile: container %s already applies %s", args[0], args[1])
			}
			return setProfiles(cmd, c, args[0], append(ct.GetProfiles(), args[1]))
		}),
	}
	removeFrom := &cobra.Command{
		Use: "remove CONTAINER PROFILE", Short: "Stop applying a profile to a container", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			ct, err := a.getContainer(cmd, args[0])
			if err != nil {
				return err
			}
			if !slices.Contains(ct.GetProfiles(), args[1]) {
				return fmt.Errorf("profile: container %s does not apply %s (it applies: %s)", args[0], args[1], strings.Join(ct.GetProfiles(), ", "))
			}
			return setProfiles(cmd, c, args[0], slices.DeleteFunc(ct.GetProfiles(), func(p string) bool { return p == args[1] }))
		}),
	}
	cmd.AddCommand(list, show, create, cp, rename, del, set, unset, getKey, edit, assign, addTo, removeFrom, a.profileDeviceCmd())
	return cmd
}

func setProfiles(cmd *cobra.Command, c *client.Client, ct string, profiles []string) error {
	_, err := c.Containers.UpdateContainer(cmd.Context(), &shoalv1.UpdateContainerRequest{Name: ct, SetProfiles: true, Profiles: profiles})
	return convert(err)
}

// profileDeviceCmd manages a profile's devices.
func (a *app) profileDeviceCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "Manage a profile's devices"}
	add := &cobra.Command{
		Use: "add PROFILE DEVICE TYPE KEY=VALUE...", Short: "Add a device (disk, unix-char, unix-block)", Args: cobra.MinimumNArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("device", args[3:])
			if err != nil {
				return err
			}
			d, err := deviceFromKV(args[1], args[2], kv)
			if err != nil {
				return err
			}
			p, err := c.Profiles.GetProfile(cmd.Context(), &shoalv1.GetProfileRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			if _, ok := p.GetProfile().GetDevices()[args[1]]; ok {
				return fmt.Errorf("device: profile %s already has a device %s (change it with 'profile device set')", args[0], args[1])
			}
			_, err = c.Profiles.UpdateProfile(cmd.Context(), &shoalv1.UpdateProfileRequest{Name: args[0], SetDevices: map[string]*shoalv1.Device{args[1]: d}})
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Device %s added to profile %s\n", args[1], args[0])
			return nil
		}),
	}
	set := &cobra.Command{
		Use: "set PROFILE DEVICE KEY=VALUE...", Short: "Change a device's keys", Args: cobra.MinimumNArgs(3),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			kv, err := parseKV("device", args[2:])
			if err != nil {
				return err
			}
			p, err := c.Profiles.GetProfile(cmd.Context(), &shoalv1.GetProfileRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			d, ok := p.GetProfile().GetDevices()[args[1]]
			if !ok {
				return fmt.Errorf("device: profile %s has no device %s", args[0], args[1])
			}
			d = mergeDevice(d, kv)
			_, err = c.Profiles.UpdateProfile(cmd.Context(), &shoalv1.UpdateProfileRequest{Name: args[0], SetDevices: map[string]*shoalv1.Device{args[1]: d}})
			return convert(err)
		}),
	}
	remove := &cobra.Command{
		Use: "remove PROFILE DEVICE", Aliases: []string{"rm"}, Short: "Remove a device", Args: cobra.ExactArgs(2),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			_, err := c.Profiles.UpdateProfile(cmd.Context(), &shoalv1.UpdateProfileRequest{Name: args[0], RemoveDevices: []string{args[1]}})
			if err != nil {
				return convert(err)
			}
			fmt.Printf("Device %s removed from profile %s\n", args[1], args[0])
			return nil
		}),
	}
	show := &cobra.Command{
		Use: "show PROFILE", Aliases: []string{"list", "ls"}, Short: "Show a profile's devices (YAML)", Args: cobra.ExactArgs(1),
		RunE: a.withClient(func(cmd *cobra.Command, c *client.Client, args []string) error {
			p, err := c.Profiles.GetProfile(cmd.Context(), &shoalv1.GetProfileRequest{Name: args[0]})
			if err != nil {
				return convert(err)
			}
			return printYAML(devicesDoc(p.GetProfile().GetDevices()))
		}),
	}
	cmd.AddCommand(add, set, remove, show)
	return cmd
}

// mergeDevice is d with keys changed (an empty value unsets one).
func mergeDevice(d *shoalv1.Device, kv map[string]string) *shoalv1.Device {
	cfg := map[string]string{}
	for k, v := range d.GetConfig() {
		cfg[k] = v
	}
	for k, v := range kv {
		if v == "" {
			delete(cfg, k)
		} else {
			cfg[k] = v
		}
	}
	return &shoalv1.Device{Type: d.GetType(), Config: cfg}
}

// profileFromYAML reads a profile document; its name must be name or empty.
func profileFromYAML(name string, in []byte) (*shoalv1.Profile, error) {
	var doc profileDoc
	dec := yaml.NewDecoder(bytes.NewReader(in))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		return nil, fmt.Errorf("profile YAML: %v", err)
	}
	if doc.Name != "" && doc.Name != name {
		return nil, fmt.Errorf("name: the YAML names %q, not %q (rename with 'shoal profile rename')", doc.Name, name)
	}
	devs, err := devicesFromDoc(doc.Devices)
	if err != nil {
		return nil, err
	}
	return &shoalv1.Profile{Name: name, Description: doc.Description, Config: doc.Config, Devices: devs}, nil
}

// editText lets the user edit text: in $VISUAL or $EDITOR (vi) when stdin
// is a terminal, else it is read from stdin.
func editText(cur []byte) ([]byte, error) {
	if !isTerminal(os.Stdin) {
		return io.ReadAll(os.Stdin)
	}
	f, err := os.CreateTemp("", "shoal-edit-*.yaml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(cur); err != nil {
		f.Close()
		return nil, err
	}
	f.Close()
	editor := cmp.Or(os.Getenv("VISUAL"), os.Getenv("EDITOR"), "vi")
	c := exec.Command("sh", "-c", editor+` "$1"`, "editor", f.Name())
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		return nil, fmt.Errorf("editor %s: %w", editor, err)
	}
	return os.ReadFile(f.Name())
}

// piped reports whether f is a file or a pipe (shoal profile create p < p.yaml).
func piped(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && (st.Mode().IsRegular() || st.Mode()&os.ModeNamedPipe != 0)
}

// isTerminal reports whether f is a terminal.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// printYAML prints v as YAML indented by two spaces, as LXD does.
func printYAML(v any) error {
	enc := yaml.NewEncoder(os.Stdout)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}
