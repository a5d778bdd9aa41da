package config

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func load(t *testing.T, args []string, env map[string]string) (Settings, error) {
	t.Helper()
	for _, n := range Names() {
		t.Setenv(EnvName(n), "")
		os.Unsetenv(EnvName(n))
	}
	t.Setenv("VXSEC_CONFIG", "")
	os.Unsetenv("VXSEC_CONFIG")
	for k, v := range env {
		t.Setenv(k, v)
	}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(fs)
}

func TestDefaults(t *testing.T) {
	s, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Socket: DefaultSocket, StateDir: DefaultStateDir, DataPort: 4800, EncryptedPort: 4801, RotateEvery: 12 * time.Hour, LogLevel: "info", GossipPort: 7947, Snapshot: DefaultSnapshot,
		Scope: ScopeAuto, SwarmDir: DefaultSwarmDir, TrustPort: 7948, Identity: IdentityRequired, SecretRotateEvery: 12 * time.Hour,
		ESPEncap: EncapAuto, ESPUDPPort: 4802, MetricsAddr: "127.0.0.1:7949", GCPercent: 200}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("defaults = %+v, want %+v", s, want)
	}
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vxsec.yaml")
	if err := os.WriteFile(file, []byte("encrypted-port: 4811\ndata-port: 4802\nlog-level: warn\nstate-dir: /from/file\ngc-percent: 300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := load(t, []string{"--config", file, "--data-port", "4801"},
		map[string]string{"VXSEC_DATA_PORT": "4803", "VXSEC_LOG_LEVEL": "debug", "VXSEC_GC_PERCENT": "400"})
	if err != nil {
		t.Fatal(err)
	}
	// flag > env > file > default
	if s.DataPort != 4801 || s.LogLevel != "debug" || s.StateDir != "/from/file" || s.Socket != DefaultSocket || s.GCPercent != 400 {
		t.Fatalf("settings = %+v", s)
	}
}

func TestRefusals(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"docker-vxlan-port", []string{"--data-port", "4789"}, nil, "Docker's VXLAN port"},
		{"port-range", nil, map[string]string{"VXSEC_DATA_PORT": "70000"}, "1..65535"},
		{"port-text", nil, map[string]string{"VXSEC_DATA_PORT": "fast"}, `"fast" is not a whole number`},
		{"advertise", []string{"--advertise-addr", "host1"}, nil, "not an IP address"},
		{"log-level", nil, map[string]string{"VXSEC_LOG_LEVEL": "loud"}, "accepted: debug, info, warn, error"},
		{"docker-gossip-port", nil, map[string]string{"VXSEC_GOSSIP_PORT": "7946"}, "Docker's swarm gossip port"},
		{"secret-short", nil, map[string]string{"VXSEC_SECRET": "c2hvcnQ="}, "base64 of 32 bytes"},
		{"secret-junk", nil, map[string]string{"VXSEC_SECRET": "!!!"}, "vxsec secret"},
		{"encrypted-port-docker", nil, map[string]string{"VXSEC_ENCRYPTED_PORT": "4789"}, "Docker's VXLAN port"},
		{"encrypted-port-data", []string{"--encrypted-port", "4800"}, nil, "is the data port"},
		{"rotate-text", nil, map[string]string{"VXSEC_ROTATE_EVERY": "daily"}, "not a duration"},
		{"gc-text", nil, map[string]string{"VXSEC_GC_PERCENT": "off"}, `gc-percent (VXSEC_GC_PERCENT): "off" is not a whole number`},
		{"gc-low", nil, map[string]string{"VXSEC_GC_PERCENT": "10"}, "gc-percent: 10 is out of range; accepted: a whole number from 50 to 1000 (default 200)"},
		{"gc-high", []string{"--gc-percent", "5000"}, nil, "gc-percent: 5000 is out of range"},
		{"rotate-short", nil, map[string]string{"VXSEC_ROTATE_EVERY": "5s"}, "at least 1m0s"},
		{"join-port", nil, map[string]string{"VXSEC_JOIN": "10.0.0.1:99999"}, "valid port"},
		{"scope", nil, map[string]string{"VXSEC_SCOPE": "swarm"}, `"swarm" is not a scope; accepted: auto, local, global`},
		{"identity mode", nil, map[string]string{"VXSEC_IDENTITY": "strict"}, `identity: "strict" is not a mode; accepted: required, optional`},
		{"secret rotation too short", nil, map[string]string{"VXSEC_SECRET_ROTATE_EVERY": "10s"}, `secret-rotate-every: 10s is too short; accepted: 0 (never) or a duration of at least 1m0s`},
		{"trust-port-gossip", []string{"--trust-port", "7947"}, nil, "is the gossip port"},
		{"trust-port-docker", nil, map[string]string{"VXSEC_TRUST_PORT": "7946"}, "Docker's swarm gossip port"},
		{"esp-encap", nil, map[string]string{"VXSEC_ESP_ENCAP": "nat"}, `esp-encap: "nat" is not an encapsulation; accepted: auto (probe, then native ESP or ESP in UDP per peer), esp (native ESP), udp (ESP in UDP)`},
		{"esp-udp-port-ike", nil, map[string]string{"VXSEC_ESP_UDP_PORT": "4500"}, "IKE's NAT traversal port"},
		{"esp-udp-port-data", []string{"--esp-udp-port", "4801"}, nil, "a UDP port of vxsec's already"},
		{"esp-udp-port-gossip", []string{"--esp-udp-port", "7947"}, nil, "a UDP port of vxsec's already"},
		{"esp-udp-port-text", nil, map[string]string{"VXSEC_ESP_UDP_PORT": "x"}, `"x" is not a whole number`},
		{"metrics-addr-no-port", nil, map[string]string{"VXSEC_METRICS_ADDR": "127.0.0.1"}, "is not host:port"},
		{"metrics-addr-name", []string{"--metrics-addr", "localhost:7949"}, nil, `"localhost" is not an IP address`},
		{"secret-accept-junk", nil, map[string]string{"VXSEC_SECRET": okSecret, "VXSEC_SECRET_ACCEPT": okSecret + ",c2hvcnQ="}, "VXSEC_SECRET_ACCEPT), secret 2: not base64 of 32 bytes"},
		{"secret-accept-alone", nil, map[string]string{"VXSEC_SECRET_ACCEPT": okSecret}, "set without secret (VXSEC_SECRET)"},
		{"secret-accept-many", nil, map[string]string{"VXSEC_SECRET": okSecret, "VXSEC_SECRET_ACCEPT": strings.Repeat(okSecret+",", 4)}, "4 secrets, at most 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.args, tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestConfigFileUnknownKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vxsec.yaml")
	if err := os.WriteFile(file, []byte("dataport: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := load(t, []string{"--config", file}, nil)
	if err == nil || !strings.Contains(err.Error(), `unknown key "dataport"`) {
		t.Fatalf("err = %v", err)
	}
}

// okSecret is a valid secret: bytes 0..31.
const okSecret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func TestClusterSettings(t *testing.T) {
	s, err := load(t, nil, map[string]string{"VXSEC_JOIN": " 10.0.0.1, 10.0.0.2:8000 ,", "VXSEC_SECRET": okSecret,
		"VXSEC_SECRET_ACCEPT": "//////////////////////////////////////////8=, " + okSecret})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.Join, []string{"10.0.0.1", "10.0.0.2:8000"}) || len(s.Secret) != 32 || s.Secret[31] != 31 {
		t.Fatalf("settings = %+v", s)
	}
	if len(s.AcceptSecrets) != 2 || s.AcceptSecrets[0][0] != 0xff || s.AcceptSecrets[1][31] != 31 {
		t.Fatalf("accepted secrets = %x", s.AcceptSecrets)
	}
	for in, want := range map[string]string{"10.0.0.1": "10.0.0.1:7947", "h1:9": "h1:9", "[fd00::1]:5": "fd00::1:5", "fd00::2": "fd00::2:7947"} {
		h, p, err := SplitJoinAddr(in, 7947)
		if err != nil || fmt.Sprintf("%s:%d", h, p) != want {
			t.Errorf("SplitJoinAddr(%q) = %s, %d, %v; want %s", in, h, p, err, want)
		}
	}
}
