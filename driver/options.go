package driver

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Option names a user can pass with `docker network create --opt`.
const (
	OptVNI       = "vni"
	OptEncrypted = "encrypted"
	OptMTU       = "com.docker.network.driver.mtu"
)

// Keys of the top-level options map that Docker fills itself.
const (
	genericKey = "com.docker.network.generic"
)

// Limits of the values options take.
const (
	MinVNI = 1
	MaxVNI = 1<<24 - 1
	// The largest underlay MTU a user can set; Linux caps devices there.
	maxUnderlayMTU = 65535
)

// acceptedOptions is the help text listed whenever an option is refused.
var acceptedOptions = fmt.Sprintf("accepted options: %s=<%d..%d>, %s (or %s=true|false), %s=<underlay MTU>",
	OptVNI, MinVNI, MaxVNI, OptEncrypted, OptEncrypted, OptMTU)

// Options are a network's parsed driver options.
type Options struct {
	// VNI is 0 when the user did not choose one.
	VNI uint32 `json:"vni,omitempty"`
	// Encrypted carries the network's VXLAN in IPsec ESP between hosts.
	Encrypted bool `json:"encrypted,omitempty"`
	// UnderlayMTU is 0 when the user did not set one: the underlay's own is used.
	UnderlayMTU int `json:"underlay_mtu,omitempty"`
}

// ParseOptions reads the user's driver options (`--opt k=v`, which Docker
// delivers as strings; swarm passes them through AllocateNetwork). An
// unknown key or a malformed value is refused with the accepted ones.
func ParseOptions(opts map[string]string) (Options, error) {
	var o Options
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(opts[k])
		switch k {
		case OptVNI:
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n < MinVNI || n > MaxVNI {
				return Options{}, fmt.Errorf("option %s=%q: not a VXLAN network identifier; %s is a whole number from %d to %d", k, v, OptVNI, MinVNI, MaxVNI)
			}
			o.VNI = uint32(n)
		case OptEncrypted:
			switch strings.ToLower(v) {
			case "", "true":
				o.Encrypted = true
			case "false":
				o.Encrypted = false
			default:
				return Options{}, fmt.Errorf("option %s=%q: accepted values are --opt %s, --opt %s=true and --opt %s=false", k, v, k, k, k)
			}
		case OptMTU:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > maxUnderlayMTU {
				return Options{}, fmt.Errorf("option %s=%q: the underlay MTU is a whole number up to %d", k, v, maxUnderlayMTU)
			}
			o.UnderlayMTU = n
		default:
			return Options{}, fmt.Errorf("unknown option %q; %s", k, acceptedOptions)
		}
	}
	return o, nil
}

// Map renders the options back in the form ParseOptions reads, so that swarm
// can hand them to every worker.
func (o Options) Map() map[string]string {
	m := map[string]string{}
	if o.VNI != 0 {
		m[OptVNI] = strconv.FormatUint(uint64(o.VNI), 10)
	}
	if o.Encrypted {
		m[OptEncrypted] = "true"
	}
	if o.UnderlayMTU != 0 {
		m[OptMTU] = strconv.Itoa(o.UnderlayMTU)
	}
	return m
}

// GenericOptions pulls the user's options out of the map Docker sends with
// CreateNetwork: they sit, as strings, under com.docker.network.generic.
// Docker's own top-level keys (internal, enable_ipv6, …) are not options of
// ours and are left alone.
func GenericOptions(all map[string]any) (map[string]string, error) {
	raw, ok := all[genericKey]
	if !ok || raw == nil {
		return map[string]string{}, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: expected an object of options, got %T", genericKey, raw)
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out[k] = x
		case bool:
			out[k] = strconv.FormatBool(x)
		case float64:
			out[k] = strconv.FormatFloat(x, 'f', -1, 64)
		case nil:
			out[k] = ""
		default:
			return nil, fmt.Errorf("option %q: unsupported value of type %T", k, v)
		}
	}
	return out, nil
}
