package config

import (
	"fmt"
	"maps"
	"net"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Device types the devices map accepts (nic devices are a container's
// NICs, managed with their own calls).
const (
	DeviceDisk      = "disk"
	DeviceUnixChar  = "unix-char"
	DeviceUnixBlock = "unix-block"
	DeviceProxy     = "proxy"
)

// DeviceTypes lists the device types, sorted.
var DeviceTypes = []string{DeviceDisk, DeviceProxy, DeviceUnixBlock, DeviceUnixChar}

// deviceKeys are each type's keys, with what each takes.
var deviceKeys = map[string]map[string]string{
	DeviceDisk: {
		"source":   "an absolute host path to bind into the container, or with pool a custom volume's name",
		"pool":     "the storage pool of the custom volume named by source",
		"path":     "an absolute path inside the container (not /)",
		"readonly": "true or false",
		"required": "true or false (false: a missing source is skipped)",
	},
	DeviceUnixChar: {
		"source": "the host's device node (/dev/fuse)",
		"path":   "where it appears in the container (default: source)",
		"uid":    "owner inside the container (default 0)",
		"gid":    "group inside the container (default 0)",
		"mode":   "octal permissions (default 0660)",
	},
}

func init() {
	deviceKeys[DeviceUnixBlock] = deviceKeys[DeviceUnixChar]
	deviceKeys[DeviceProxy] = map[string]string{
		"listen":  "tcp:ADDRESS:PORT or udp:ADDRESS:PORT on the host (tcp:0.0.0.0:8080)",
		"connect": "tcp:ADDRESS:PORT or udp:ADDRESS:PORT inside the container, the listen's protocol (tcp:127.0.0.1:80)",
		"bind":    "host (the member listens; the default)",
	}
}

var deviceNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// ValidateDevice checks one device of a devices map: its name, type and
// keys. The message names the field (devices.NAME.KEY) and what it takes.
func ValidateDevice(name, typ string, cfg map[string]string) error {
	field := "devices." + name
	if !deviceNameRe.MatchString(name) {
		return invalid(field, "%q is not a valid device name (1-63 letters, digits, '.', '_' and '-', starting with a letter or digit)", name)
	}
	if typ == "nic" {
		return invalid(field+".type", "nic devices are network interfaces: add them with 'shoal config device add NAME DEVICE nic network=NET'")
	}
	keys, ok := deviceKeys[typ]
	if !ok {
		return invalid(field+".type", "%q is not a device type (want %s)", typ, strings.Join(DeviceTypes, ", "))
	}
	ks := make([]string, 0, len(cfg))
	for k := range cfg {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	for _, k := range ks {
		if _, ok := keys[k]; !ok {
			known := make([]string, 0, len(keys))
			for x := range keys {
				known = append(known, x)
			}
			sort.Strings(known)
			return invalid(field+"."+k, "unknown key for a %s device (known: %s)", typ, strings.Join(known, ", "))
		}
	}
	switch typ {
	case DeviceDisk:
		return validateDisk(field, cfg)
	case DeviceProxy:
		return validateProxy(field, cfg)
	default:
		return validateUnix(field, cfg)
	}
}

func validateDisk(field string, cfg map[string]string) error {
	p := cfg["path"]
	if p == "" {
		return invalid(field+".path", "a disk device needs path: %s", deviceKeys[DeviceDisk]["path"])
	}
	if err := checkAbs(p); err != nil || path.Clean(p) == "/" {
		return invalid(field+".path", "%q: want %s", p, deviceKeys[DeviceDisk]["path"])
	}
	src := cfg["source"]
	if src == "" {
		return invalid(field+".source", "a disk device needs source: %s", deviceKeys[DeviceDisk]["source"])
	}
	if pool, ok := cfg["pool"]; ok {
		if err := ValidateName(field+".pool", pool); err != nil {
			return err
		}
		if err := ValidateName(field+".source", src); err != nil {
			return invalid(field+".source", "%q: with pool, source is a custom volume's name (1-63 letters, digits and '-')", src)
		}
		if _, ok := cfg["required"]; ok {
			return invalid(field+".required", "a custom volume is always required")
		}
	} else if err := checkAbs(src); err != nil {
		return invalid(field+".source", "%q: want %s", src, deviceKeys[DeviceDisk]["source"])
	}
	for _, k := range []string{"readonly", "required"} {
		if v, ok := cfg[k]; ok {
			if _, err := ParseBool(v); err != nil {
				return invalid(field+"."+k, "%q: want true or false", v)
			}
		}
	}
	return nil
}

func validateProxy(field string, cfg map[string]string) error {
	for _, k := range []string{"listen", "connect"} {
		v := cfg[k]
		if v == "" {
			return invalid(field+"."+k, "a proxy device needs %s: %s", k, deviceKeys[DeviceProxy][k])
		}
		if _, _, err := ParseProxyAddr(v); err != nil {
			return invalid(field+"."+k, "%q: %v (want %s)", v, err, deviceKeys[DeviceProxy][k])
		}
	}
	lnet, _, _ := ParseProxyAddr(cfg["listen"])
	if cnet, _, _ := ParseProxyAddr(cfg["connect"]); cnet != lnet {
		return invalid(field+".connect", "%q: protocol %s, the listen's is %s (a proxy forwards tcp to tcp, udp to udp)", cfg["connect"], cnet, lnet)
	}
	if b := cfg["bind"]; b != "" && b != "host" {
		return invalid(field+".bind", "%q: only host is supported (the member listens and connects inside the container)", b)
	}
	return nil
}

// ParseProxyAddr splits a proxy address (tcp:ADDRESS:PORT or
// udp:ADDRESS:PORT) into its network and host:port.
func ParseProxyAddr(v string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(v, ":")
	if !ok {
		return "", "", fmt.Errorf("not PROTOCOL:ADDRESS:PORT")
	}
	if network != "tcp" && network != "udp" {
		return "", "", fmt.Errorf("protocol %q: allowed tcp, udp", network)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("not ADDRESS:PORT")
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", "", fmt.Errorf("address %q is not an IP address", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("port %q is not 1-65535", port)
	}
	return network, addr, nil
}

func validateUnix(field string, cfg map[string]string) error {
	src := cfg["source"]
	if src == "" {
		return invalid(field+".source", "a unix device needs source: the host's device node (/dev/fuse)")
	}
	if err := checkAbs(src); err != nil || !strings.HasPrefix(path.Clean(src), "/dev/") {
		return invalid(field+".source", "%q: want a device node under /dev", src)
	}
	if p := cfg["path"]; p != "" {
		if err := checkAbs(p); err != nil || path.Clean(p) == "/" {
			return invalid(field+".path", "%q: want an absolute path inside the container", p)
		}
	}
	for _, k := range []string{"uid", "gid"} {
		if v, ok := cfg[k]; ok {
			if n, err := strconv.ParseUint(v, 10, 32); err != nil || n > 65535 {
				return invalid(field+"."+k, "%q: want an id from 0 to 65535", v)
			}
		}
	}
	if v, ok := cfg["mode"]; ok {
		if n, err := strconv.ParseUint(v, 8, 32); err != nil || n > 0o777 {
			return invalid(field+".mode", "%q: want octal permissions such as 0660", v)
		}
	}
	return nil
}

// checkAbs accepts a clean-able absolute path with no '..' component.
func checkAbs(p string) error {
	if !strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") || strings.ContainsAny(p, " \t\n\r\\\x00") {
		return fmt.Errorf("not an absolute path")
	}
	return nil
}

// DevicePaths checks that no two devices of one expanded map mount at the
// same path inside the container.
func DevicePaths(devs map[string]string) error {
	seen := map[string]string{}
	names := make([]string, 0, len(devs))
	for n := range devs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := path.Clean(devs[n])
		if other, ok := seen[p]; ok {
			return invalid("devices."+n+".path", "%q is also the path of device %s", p, other)
		}
		seen[p] = n
	}
	return nil
}

// volumeKeys are the keys a custom storage volume takes.
var volumeKeys = map[string]string{
	"size": "a size (10GiB, 500MB): the volume's quota, where its pool's driver has quotas",
}

// ValidateVolumeConfig checks a custom storage volume's config: size and
// user.* keys. The message names the field (config.KEY).
func ValidateVolumeConfig(cfg map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		v := cfg[k]
		switch {
		case strings.HasPrefix(k, "user.") && len(k) > len("user."):
		case k == "size":
			if _, err := ParseSize(v); err != nil {
				return invalid("config.size", "%q: %v (want %s)", v, err, volumeKeys["size"])
			}
		default:
			return invalid("config."+k, "unknown key for a storage volume (known: size, user.*)")
		}
	}
	return nil
}
