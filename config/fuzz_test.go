package config

// Fuzz targets of the settings vxsec reads from outside: the config file
// (YAML through viper) and the join addresses. `go test` runs the seeds
// (f.Add and testdata/fuzz) as regression tests; `make fuzz` fuzzes.

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// FuzzLoadFile: whatever a config file holds, settings that load are
// within the documented bounds (each is checked here on its own, not by
// calling Validate), and a refusal names the file or the setting at fault.
func FuzzLoadFile(f *testing.F) {
	f.Add([]byte("data-port: 4800\nencrypted-port: 4801\ngossip-port: 7947\ntrust-port: 7948\nrotate-every: 90m\n" +
		"log-level: debug\nstate-dir: /var/lib/vxsec\nsocket: /run/docker/plugins/vxsec.sock\nadvertise-addr: 192.0.2.10\n" +
		"join: 192.0.2.11, 192.0.2.12:7947, [fd00::13]:7947\nsecret: AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n" +
		"scope: global\nswarm-dir: /var/lib/docker/swarm\nsnapshot: ''\n"))
	f.Add([]byte(`{"data-port": 4900, "encrypted-port": 4901, "join": "h1,h2:9000", "scope": "local"}`))
	f.Add([]byte("data-port: 4789\n"))
	f.Add([]byte("dataport: 1\n"))
	f.Add([]byte("data-port: [1, 2]\nrotate-every: 30s\n"))
	f.Add([]byte("gossip-port: 7948\n"))
	f.Add([]byte("secret: c2hvcnQ=\nlog-level: loud\n"))
	for _, n := range Names() {
		f.Setenv(EnvName(n), "")
		os.Unsetenv(EnvName(n))
	}
	f.Setenv("VXSEC_CONFIG", "")
	os.Unsetenv("VXSEC_CONFIG")
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "vxsec.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("fuzz", pflag.ContinueOnError)
		RegisterFlags(fs)
		if err := fs.Parse([]string{"--config", file}); err != nil {
			t.Fatal(err)
		}
		s, err := Load(fs)
		if err != nil {
			msg := err.Error()
			named := strings.Contains(msg, file)
			for _, n := range Names() {
				named = named || strings.Contains(msg, n)
			}
			if !named {
				t.Fatalf("config file %q: error %q names neither the file nor a setting", data, err)
			}
			return
		}
		for _, p := range []struct {
			name      string
			port, not int
		}{
			{"data-port", s.DataPort, dockerVXLANPort}, {"encrypted-port", s.EncryptedPort, dockerVXLANPort},
			{"gossip-port", s.GossipPort, dockerGossipPort}, {"trust-port", s.TrustPort, dockerGossipPort},
		} {
			if p.port < 1 || p.port > 65535 || p.port == p.not {
				t.Fatalf("config file %q: accepted %s %d", data, p.name, p.port)
			}
		}
		if s.EncryptedPort == s.DataPort || s.TrustPort == s.GossipPort {
			t.Fatalf("config file %q: accepted shared ports %+v", data, s)
		}
		if s.RotateEvery < time.Minute || (s.Secret != nil && len(s.Secret) != SecretBytes) || s.Socket == "" || s.StateDir == "" {
			t.Fatalf("config file %q: accepted %+v", data, s)
		}
		if s.Scope != ScopeAuto && s.Scope != ScopeLocal && s.Scope != ScopeGlobal {
			t.Fatalf("config file %q: accepted scope %q", data, s.Scope)
		}
		if _, err := ParseLogLevel(s.LogLevel); err != nil {
			t.Fatalf("config file %q: accepted log level %q", data, s.LogLevel)
		}
		if s.AdvertiseAddr != "" && net.ParseIP(s.AdvertiseAddr) == nil {
			t.Fatalf("config file %q: accepted advertise-addr %q", data, s.AdvertiseAddr)
		}
		for _, j := range s.Join {
			if j == "" || strings.TrimSpace(j) != j {
				t.Fatalf("config file %q: join list %q has an untrimmed or empty entry", data, s.Join)
			}
			if _, _, err := SplitJoinAddr(j, s.GossipPort); err != nil {
				t.Fatalf("config file %q: accepted join address %q: %v", data, j, err)
			}
		}
	})
}

// FuzzSplitJoinAddr: an accepted join address gives the port written, or
// the default when none is, always a valid one, and what the daemon
// rebuilds from host and port (net.JoinHostPort) splits back to them; a
// refused address is quoted in the error.
func FuzzSplitJoinAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.11", "192.0.2.11:8000", "[fd00::13]:7947", "fd00::14", "[fd00::15]", "h1", "h1:9", "h1:99999", "h1:", ":7947", "a/b", "h1:0x10"} {
		f.Add(s, uint16(7947))
	}
	f.Fuzz(func(t *testing.T, addr string, def uint16) {
		defPort := 1 + int(def)%65535
		host, port, err := SplitJoinAddr(addr, defPort)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(addr)) {
				t.Fatalf("SplitJoinAddr(%q): error %q does not quote the address", addr, err)
			}
			return
		}
		if port < 1 || port > 65535 {
			t.Fatalf("SplitJoinAddr(%q) = %q, %d: port out of range", addr, host, port)
		}
		if _, written, err := net.SplitHostPort(addr); err == nil {
			if written != strconv.Itoa(port) {
				t.Fatalf("SplitJoinAddr(%q) = %q, %d: the port written is %q", addr, host, port, written)
			}
		} else if port != defPort {
			t.Fatalf("SplitJoinAddr(%q) = %q, %d: no port written, want the default %d", addr, host, port, defPort)
		}
		h2, p2, err := SplitJoinAddr(net.JoinHostPort(host, strconv.Itoa(port)), defPort)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("SplitJoinAddr(%q) = %q, %d; rebuilt as %q it splits to %q, %d, %v",
				addr, host, port, net.JoinHostPort(host, strconv.Itoa(port)), h2, p2, err)
		}
	})
}
