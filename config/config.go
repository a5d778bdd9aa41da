package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// EnvPrefix is the prefix of every environment variable vxsec reads.
const EnvPrefix = "VXSEC"

// Defaults that never collide with Docker's own overlay (VXLAN 4789, gossip 7946).
const (
	DefaultSocket   = "/run/docker/plugins/vxsec.sock"
	DefaultStateDir = "/var/lib/vxsec"
	// DefaultSnapshot is in the plugin's own filesystem, not the state
	// directory: it belongs to the installed plugin (its cluster
	// membership), survives restarts, and goes with `docker plugin rm`.
	DefaultSnapshot = "/var/lib/vxsec-cluster/serf.snapshot"
	DefaultDataPort = 4800
	// DefaultEncryptedPort carries encrypted networks' VXLAN, so that xfrm
	// policies select it by port alone and plain networks stay plain.
	DefaultEncryptedPort = 4801
	DefaultRotateEvery   = "12h"
	// DefaultSecretRotateEvery is how long a swarm-agreed secret lives.
	DefaultSecretRotateEvery = "12h"
	// MinRotateEvery keeps a typo from turning rotation into a busy loop.
	MinRotateEvery    = time.Minute
	DefaultGossipPort = 7947
	DefaultLogLevel   = "info"
	// DefaultTrustPort is where swarm members exchange the cluster secret
	// over mutual TLS (swarm's own ports are 2377, 7946 and 4789).
	DefaultTrustPort = 7948
	// DefaultSwarmDir is the engine's swarm directory as the plugin sees it
	// (config.json bind-mounts it read-only at the same path).
	DefaultSwarmDir = "/var/lib/docker/swarm"
	DefaultScope    = ScopeAuto
	// SecretBytes is the length of the cluster secret, before base64.
	SecretBytes = 32
	// MaxAcceptSecrets bounds secret-accept.
	MaxAcceptSecrets = 3
	dockerVXLANPort  = 4789
	dockerGossipPort = 7946
	// DefaultESPUDPPort is where ESP in UDP arrives: vxsec's own, never
	// 4500, which host IPsec daemons (strongSwan, libreswan) own.
	DefaultESPUDPPort = 4802
	// DefaultMetricsAddr serves metrics and status on the host's loopback
	// only: the plugin runs in the host's network namespace.
	DefaultMetricsAddr = "127.0.0.1:7949"
	// DefaultGCPercent is the daemon's garbage-collector target (GOGC).
	// Its live heap is small (about 10 MiB with 1,000 endpoints in the
	// cluster), so the collector's cost is how often it runs: at Go's 100 a
	// burst of tables kept it at a fifth of the daemons' CPU in the 50-host
	// benchmark; 200 cut their CPU by 17 % for about 4 MiB more RSS, and 400
	// grew the RSS by 11 MiB and bought nothing more (docs/performance.md).
	DefaultGCPercent = 200
	// MinGCPercent and MaxGCPercent bound it: below, the collector runs
	// most of the time; above, the heap may grow to many times what is live.
	MinGCPercent, MaxGCPercent = 50, 1000

	ikeNATTPort     = 4500
	DefaultESPEncap = EncapAuto
)

// ESP encapsulations (esp-encap).
const (
	// EncapAuto receives natively from peers whose native ESP arrives
	// (probed), in UDP from the others.
	EncapAuto = "auto"
	// EncapESP is native ESP (IP protocol 50), unless a peer asks for UDP.
	EncapESP = "esp"
	// EncapUDP is ESP in UDP (RFC 3948) with every peer: for paths that
	// drop IP protocol 50 (many cloud firewalls, NAT gateways).
	EncapUDP = "udp"
)

// Scopes the driver can report to Docker.
const (
	// ScopeAuto is global when the engine is a swarm node at start, else local.
	ScopeAuto = "auto"
	// ScopeLocal: networks are made on each host (same vni, same network).
	ScopeLocal = "local"
	// ScopeGlobal: networks are swarm networks, allocated by the leader.
	ScopeGlobal = "global"
)

// Settings is everything `vxsec daemon` can be told.
type Settings struct {
	// Socket is the unix socket the remote driver API listens on.
	Socket string
	// StateDir holds the persisted desired state.
	StateDir string
	// AdvertiseAddr is this host's underlay address: its name in the
	// cluster and the address peers send to. Empty means: the address of
	// the interface that holds the default route. One that is not the
	// host's own is a NAT's in front of it (vxlan.FindUnderlay).
	AdvertiseAddr string
	// DataPort is the UDP port of VXLAN between hosts.
	DataPort int
	// EncryptedPort is the UDP port of encrypted networks' VXLAN, which
	// travels only inside ESP.
	EncryptedPort int
	// RotateEvery is how often IPsec keys are rotated.
	RotateEvery time.Duration
	// SecretRotateEvery is how often swarm managers issue a new cluster
	// secret (swarm mode); zero never.
	SecretRotateEvery time.Duration
	// LogLevel is one of debug, info, warn, error.
	LogLevel string
	// GossipPort is the TCP and UDP port of the cluster (serf).
	GossipPort int
	// Join lists addresses (host or host:port) of members to join.
	Join []string
	// Secret is the cluster secret (decoded); nil runs an unauthenticated
	// cluster, allowed for plain networks only.
	Secret []byte
	// AcceptSecrets are other cluster secrets this host also accepts,
	// but never sends with: the steps of a rolling change of the secret.
	AcceptSecrets [][]byte
	// Snapshot is where the cluster's membership is kept to rejoin after a
	// restart; empty keeps none.
	Snapshot string
	// Scope is the data scope reported to Docker: auto, local or global.
	Scope string
	// SwarmDir is the engine's swarm directory: node certificate, root CA
	// and the managers' addresses.
	SwarmDir string
	// TrustPort is the TCP port of the swarm secret exchange.
	TrustPort int
	// IdentityDir holds this host's identity (`vxsec ca issue`); empty
	// runs without one.
	IdentityDir string
	// Identity is IdentityRequired (refuse unsigned tables) or
	// IdentityOptional (accept them, while a cluster moves to identities).
	Identity string
	// ESPEncap is EncapAuto, EncapESP or EncapUDP.
	ESPEncap string
	// ESPUDPPort is the UDP port ESP in UDP arrives on.
	ESPUDPPort int
	// MetricsAddr is where Prometheus metrics (/metrics) and the status
	// (/status) are served over HTTP; empty serves nothing.
	MetricsAddr string
	// GCPercent is the garbage collector's target (GOGC) of the daemon.
	GCPercent int
}

// Identity modes.
const (
	IdentityRequired = "required"
	IdentityOptional = "optional"
)

// setting describes one setting: its name in all three places and its help.
type setting struct {
	name  string
	def   any
	usage string
}

var settings = []setting{
	{"socket", DefaultSocket, "unix socket of the remote network driver API"},
	{"state-dir", DefaultStateDir, "directory of the persisted desired state"},
	{"advertise-addr", "", "underlay address of this host (default: the address of the default-route interface); an address not its own is a NAT's that forwards vxsec's ports to it"},
	{"data-port", DefaultDataPort, "UDP port of VXLAN between hosts (never 4789, Docker's)"},
	{"encrypted-port", DefaultEncryptedPort, "UDP port of encrypted networks' VXLAN, carried only in IPsec ESP (never 4789, never the data port)"},
	{"rotate-every", DefaultRotateEvery, "how often IPsec keys rotate, as a Go duration (12h, 90m); at least 1m"},
	{"secret-rotate-every", DefaultSecretRotateEvery, "swarm mode: how often the managers issue a new cluster secret (12h, 90m; at least 1m; 0: never)"},
	{"log-level", DefaultLogLevel, "log level: debug, info, warn or error"},
	{"gossip-port", DefaultGossipPort, "TCP and UDP port of the vxsec cluster (never 7946, Docker's)"},
	{"join", "", "comma-separated addresses (host or host:port) of cluster members to join"},
	{"secret", "", "cluster secret, base64 of 32 bytes from `vxsec secret`; authenticates and encrypts the cluster"},
	{"secret-accept", "", "comma-separated cluster secrets also accepted, never sent with (a rolling change of the secret, docs/identity.md)"},
	{"snapshot", DefaultSnapshot, "file keeping the cluster's membership, to rejoin after a restart (empty: none)"},
	{"scope", DefaultScope, "data scope reported to Docker: auto (global on a swarm node, else local), local or global"},
	{"swarm-dir", DefaultSwarmDir, "the engine's swarm directory (read-only): node certificate, root CA, managers"},
	{"trust-port", DefaultTrustPort, "TCP port where swarm nodes exchange the cluster secret over mutual TLS"},
	{"identity-dir", "", "directory of this host's identity from `vxsec ca issue` (host.crt, host.key, ca.crt); empty: none"},
	{"identity", IdentityRequired, "with identity-dir: required (refuse other hosts' unsigned tables) or optional (accept them, while hosts move to identities one by one)"},
	{"esp-encap", DefaultESPEncap, "how encrypted VXLAN reaches this host: auto (native ESP from peers whose ESP is seen to arrive, ESP in UDP from the others), esp (native ESP, unless a peer asks for udp) or udp (ESP in UDP both ways with every peer)"},
	{"esp-udp-port", DefaultESPUDPPort, "UDP port of ESP in UDP (never 4500, IKE's; never 4789)"},
	{"metrics-addr", DefaultMetricsAddr, "host:port serving Prometheus metrics (/metrics) and the status (/status, /status.json) over HTTP; empty: none"},
	{"gc-percent", DefaultGCPercent, "the daemon's garbage-collector target (GOGC), 50 to 1000: higher spends memory to save CPU ($GOGC, if set, overrides it)"},
}

// EnvName is the environment variable of a setting name: data-port → VXSEC_DATA_PORT.
func EnvName(name string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Names lists every setting name, in the order of the help text.
func Names() []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.name
	}
	return out
}

// RegisterFlags adds a flag for every setting plus --config to fs.
func RegisterFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "optional config file (yaml, json or toml) with the same keys as the flags")
	for _, s := range settings {
		usage := fmt.Sprintf("%s (env %s)", s.usage, EnvName(s.name))
		switch d := s.def.(type) {
		case string:
			fs.String(s.name, d, usage)
		case int:
			fs.Int(s.name, d, usage)
		}
	}
}

// Load resolves the settings from fs (already parsed), the environment and
// the config file named by --config or VXSEC_CONFIG.
func Load(fs *pflag.FlagSet) (Settings, error) {
	v := viper.New()
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	for _, s := range settings {
		v.SetDefault(s.name, s.def)
	}
	if err := v.BindPFlags(fs); err != nil {
		return Settings{}, fmt.Errorf("binding flags: %w", err)
	}
	if file := v.GetString("config"); file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return Settings{}, fmt.Errorf("reading config file %s: %w", file, err)
		}
		if err := checkFileKeys(v.AllKeys()); err != nil {
			return Settings{}, fmt.Errorf("config file %s: %w", file, err)
		}
	}
	port, err := intSetting(v, "data-port")
	if err != nil {
		return Settings{}, err
	}
	gport, err := intSetting(v, "gossip-port")
	if err != nil {
		return Settings{}, err
	}
	eport, err := intSetting(v, "encrypted-port")
	if err != nil {
		return Settings{}, err
	}
	rotate, err := time.ParseDuration(strings.TrimSpace(v.GetString("rotate-every")))
	if err != nil {
		return Settings{}, fmt.Errorf("rotate-every (%s): %q is not a duration; accepted: a Go duration of at least %v, such as 12h or 90m",
			EnvName("rotate-every"), v.GetString("rotate-every"), MinRotateEvery)
	}
	srotate, err := time.ParseDuration(strings.TrimSpace(v.GetString("secret-rotate-every")))
	if err != nil {
		return Settings{}, fmt.Errorf("secret-rotate-every (%s): %q is not a duration; accepted: 0 (never), or a Go duration of at least %v, such as 12h or 90m",
			EnvName("secret-rotate-every"), v.GetString("secret-rotate-every"), MinRotateEvery)
	}
	tport, err := intSetting(v, "trust-port")
	if err != nil {
		return Settings{}, err
	}
	uport, err := intSetting(v, "esp-udp-port")
	if err != nil {
		return Settings{}, err
	}
	gc, err := intSetting(v, "gc-percent")
	if err != nil {
		return Settings{}, err
	}
	secret, err := ParseSecret(v.GetString("secret"))
	if err != nil {
		return Settings{}, err
	}
	var accept [][]byte
	for i, text := range splitList(v.GetString("secret-accept")) {
		b, err := ParseSecret(text)
		if err != nil {
			return Settings{}, fmt.Errorf("secret-accept (%s), secret %d: not base64 of %d bytes; make one with `vxsec secret`", EnvName("secret-accept"), i+1, SecretBytes)
		}
		accept = append(accept, b)
	}
	if len(accept) > MaxAcceptSecrets {
		return Settings{}, fmt.Errorf("secret-accept (%s): %d secrets, at most %d (a rolling change needs one)", EnvName("secret-accept"), len(accept), MaxAcceptSecrets)
	}
	if len(accept) > 0 && secret == nil {
		return Settings{}, fmt.Errorf("secret-accept (%s) is set without secret (%s): set the secret this host sends with", EnvName("secret-accept"), EnvName("secret"))
	}
	s := Settings{
		Socket:            v.GetString("socket"),
		StateDir:          v.GetString("state-dir"),
		AdvertiseAddr:     v.GetString("advertise-addr"),
		DataPort:          port,
		EncryptedPort:     eport,
		RotateEvery:       rotate,
		SecretRotateEvery: srotate,
		LogLevel:          strings.ToLower(v.GetString("log-level")),
		GossipPort:        gport,
		Join:              splitList(v.GetString("join")),
		Secret:            secret,
		AcceptSecrets:     accept,
		Snapshot:          v.GetString("snapshot"),
		Scope:             strings.ToLower(strings.TrimSpace(v.GetString("scope"))),
		SwarmDir:          v.GetString("swarm-dir"),
		TrustPort:         tport,
		IdentityDir:       v.GetString("identity-dir"),
		Identity:          strings.ToLower(strings.TrimSpace(v.GetString("identity"))),
		ESPEncap:          strings.ToLower(strings.TrimSpace(v.GetString("esp-encap"))),
		ESPUDPPort:        uport,
		MetricsAddr:       strings.TrimSpace(v.GetString("metrics-addr")),
		GCPercent:         gc,
	}
	return s, s.Validate()
}

// intSetting reads an integer setting, refusing what is not a number rather
// than letting viper turn it into 0.
func intSetting(v *viper.Viper, name string) (int, error) {
	raw := v.Get(name)
	switch x := raw.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case float64:
		return int(x), nil
	}
	var n int
	str := strings.TrimSpace(fmt.Sprint(raw))
	if _, err := fmt.Sscanf(str, "%d", &n); err != nil || fmt.Sprint(n) != str {
		return 0, fmt.Errorf("%s (%s): %q is not a whole number", name, EnvName(name), str)
	}
	return n, nil
}

func checkFileKeys(keys []string) error {
	known := map[string]bool{"config": true}
	for _, s := range settings {
		known[s.name] = true
	}
	for _, k := range keys {
		if !known[k] {
			return fmt.Errorf("unknown key %q; accepted keys: %s", k, strings.Join(Names(), ", "))
		}
	}
	return nil
}

// Validate checks every setting and names the accepted values when one is off.
func (s Settings) Validate() error {
	var errs []error
	if s.Socket == "" {
		errs = append(errs, errors.New("socket: must not be empty"))
	}
	if s.StateDir == "" {
		errs = append(errs, errors.New("state-dir: must not be empty"))
	}
	if s.AdvertiseAddr != "" && net.ParseIP(s.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("advertise-addr: %q is not an IP address", s.AdvertiseAddr))
	}
	if err := checkPort("data-port", s.DataPort, dockerVXLANPort, "Docker's VXLAN port"); err != nil {
		errs = append(errs, err)
	}
	if err := checkPort("encrypted-port", s.EncryptedPort, dockerVXLANPort, "Docker's VXLAN port"); err != nil {
		errs = append(errs, err)
	} else if s.EncryptedPort == s.DataPort {
		errs = append(errs, fmt.Errorf("encrypted-port: %d is the data port; encrypted VXLAN needs a port of its own (default %d)", s.EncryptedPort, DefaultEncryptedPort))
	}
	if s.RotateEvery < MinRotateEvery {
		errs = append(errs, fmt.Errorf("rotate-every: %v is too short; accepted: a duration of at least %v (default %s)", s.RotateEvery, MinRotateEvery, DefaultRotateEvery))
	}
	if s.SecretRotateEvery != 0 && s.SecretRotateEvery < MinRotateEvery {
		errs = append(errs, fmt.Errorf("secret-rotate-every: %v is too short; accepted: 0 (never) or a duration of at least %v (default %s)", s.SecretRotateEvery, MinRotateEvery, DefaultSecretRotateEvery))
	}
	if _, err := ParseLogLevel(s.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := checkPort("gossip-port", s.GossipPort, dockerGossipPort, "Docker's swarm gossip port"); err != nil {
		errs = append(errs, err)
	}
	switch s.Scope {
	case ScopeAuto, ScopeLocal, ScopeGlobal:
	default:
		errs = append(errs, fmt.Errorf("scope: %q is not a scope; accepted: %s, %s, %s", s.Scope, ScopeAuto, ScopeLocal, ScopeGlobal))
	}
	switch s.Identity {
	case IdentityRequired, IdentityOptional:
	default:
		errs = append(errs, fmt.Errorf("identity: %q is not a mode; accepted: %s, %s", s.Identity, IdentityRequired, IdentityOptional))
	}
	if err := checkPort("trust-port", s.TrustPort, dockerGossipPort, "Docker's swarm gossip port"); err != nil {
		errs = append(errs, err)
	} else if s.TrustPort == s.GossipPort {
		errs = append(errs, fmt.Errorf("trust-port: %d is the gossip port; the secret exchange needs a TCP port of its own (default %d)", s.TrustPort, DefaultTrustPort))
	}
	for _, j := range s.Join {
		if _, _, err := SplitJoinAddr(j, s.GossipPort); err != nil {
			errs = append(errs, err)
		}
	}
	switch s.ESPEncap {
	case EncapAuto, EncapESP, EncapUDP:
	default:
		errs = append(errs, fmt.Errorf("esp-encap: %q is not an encapsulation; accepted: %s (probe, then native ESP or ESP in UDP per peer), %s (native ESP), %s (ESP in UDP)", s.ESPEncap, EncapAuto, EncapESP, EncapUDP))
	}
	if err := checkPort("esp-udp-port", s.ESPUDPPort, dockerVXLANPort, "Docker's VXLAN port"); err != nil {
		errs = append(errs, err)
	} else if s.ESPUDPPort == ikeNATTPort {
		errs = append(errs, fmt.Errorf("esp-udp-port: %d is IKE's NAT traversal port, which host IPsec daemons own; accepted: any other port (default %d)", s.ESPUDPPort, DefaultESPUDPPort))
	} else if s.ESPUDPPort == s.DataPort || s.ESPUDPPort == s.EncryptedPort || s.ESPUDPPort == s.GossipPort {
		errs = append(errs, fmt.Errorf("esp-udp-port: %d is a UDP port of vxsec's already (data, encrypted or gossip port); ESP in UDP needs a port of its own (default %d)", s.ESPUDPPort, DefaultESPUDPPort))
	}
	if s.MetricsAddr != "" {
		host, port, err := net.SplitHostPort(s.MetricsAddr)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil || perr != nil || n < 1 || n > 65535:
			errs = append(errs, fmt.Errorf("metrics-addr: %q is not host:port; accepted: an address and port such as %s, or empty for none", s.MetricsAddr, DefaultMetricsAddr))
		case host != "" && net.ParseIP(host) == nil:
			errs = append(errs, fmt.Errorf("metrics-addr: %q is not an IP address; accepted: an address and port such as %s, or empty for none", host, DefaultMetricsAddr))
		}
	}
	if s.GCPercent < MinGCPercent || s.GCPercent > MaxGCPercent {
		errs = append(errs, fmt.Errorf("gc-percent: %d is out of range; accepted: a whole number from %d to %d (default %d)", s.GCPercent, MinGCPercent, MaxGCPercent, DefaultGCPercent))
	}
	return errors.Join(errs...)
}

func checkPort(name string, port, forbidden int, why string) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%s: %d is out of range; accepted: 1..65535 except %d", name, port, forbidden)
	}
	if port == forbidden {
		return fmt.Errorf("%s: %d is %s and would collide with it; accepted: 1..65535 except %d", name, port, why, forbidden)
	}
	return nil
}

// ParseLogLevel maps a level name onto slog's levels.
func ParseLogLevel(name string) (slog.Level, error) {
	switch name {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log-level: %q is not a level; accepted: debug, info, warn, error", name)
}

// ParseSecret decodes a cluster secret; empty means none.
func ParseSecret(text string) ([]byte, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(b) != SecretBytes {
		return nil, fmt.Errorf("secret (%s): not base64 of %d bytes; make one with `vxsec secret`", EnvName("secret"), SecretBytes)
	}
	return b, nil
}

// SplitJoinAddr splits a join address into host and port, defaulting the
// port to the gossip port.
func SplitJoinAddr(addr string, defPort int) (string, int, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		// No port given (an IPv6 literal needs brackets to carry one).
		if ip := net.ParseIP(strings.Trim(addr, "[]")); ip != nil {
			return ip.String(), defPort, nil
		}
		// A bracket outside an IPv6 literal is no host name: "[" was
		// accepted and made the join address "[:7947", which never
		// parses (found by FuzzSplitJoinAddr).
		if addr != "" && !strings.ContainsAny(addr, ":/ []") {
			return addr, defPort, nil
		}
		return "", 0, fmt.Errorf("join: %q is not an address (host or host:port)", addr)
	}
	// Sscanf stops at the first non-digit: without the comparison,
	// "10.0.0.1:79x7" joined port 79 (found by FuzzSplitJoinAddr).
	var port int
	if _, err := fmt.Sscanf(portText, "%d", &port); err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != portText {
		return "", 0, fmt.Errorf("join: %q has no valid port (1..65535)", addr)
	}
	return host, port, nil
}

func splitList(text string) []string {
	var out []string
	for _, f := range strings.Split(text, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
