//go:build e2e

package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// (e) Bad input is refused with an error that names the problem and the
// accepted values, and creates nothing: no Docker network, no host link.
func TestBadInputIsRefused(t *testing.T) {
	requirePlugin(t)
	cases := []struct {
		name string
		args []string
		// Every one of these must appear in the error (case-insensitive).
		want []string
	}{
		{"vni-zero", []string{"--opt", "vni=0"}, []string{"vni", `"0"`, "16777215"}},
		{"vni-not-a-number", []string{"--opt", "vni=abc"}, []string{"vni", `"abc"`, "16777215"}},
		{"vni-too-large", []string{"--opt", "vni=16777216"}, []string{"vni", "16777216", "16777215"}},
		{"unknown-option", []string{"--opt", "bogus=1"}, []string{"bogus", "accepted", "vni", "encrypted"}},
		{"encrypted-bad-value", []string{"--opt", "encrypted=maybe"}, []string{"encrypted", "maybe", "true", "false"}},
		{"encrypted-unsupported-kernel", []string{"--opt", "encrypted"}, []string{"encrypt", "kernel lacks", "ESP", "cleartext"}},
		{"ipv6-subnet", []string{"--ipv6", "--subnet", "fd00:1::/64"}, []string{"ipv6", "not supported"}},
		// Docker 29 reads it as "any /24 of the default pools"; before 29
		// the driver gets 0.0.0.0/24 as it is.
		{"subnet-any", []string{"--subnet", "0.0.0.0/24"}, []string{"0.0.0.0/24", "Docker 29", "--subnet"}},
	}
	if engineMajor(t) >= 28 {
		// --ipv4=false exists since Docker 28 (the 20.10 CLI has no such
		// flag, so there is nothing of vxsec's to check there).
		cases = append(cases, struct {
			name string
			args []string
			want []string
		}{"ipv4-false", []string{"--ipv4=false"}, []string{"--ipv4=false", "IPv4 only"}})
	} else {
		t.Logf("Docker %d: no --ipv4 flag before 28, its case is not run on this engine", engineMajor(t))
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshotHost(t)
			subnet := []string{"--subnet", "10.37." + strconv.Itoa(i) + ".0/24"}
			if slices.Contains(tc.args, "--ipv6") || slices.Contains(tc.args, "--subnet") || slices.Contains(tc.args, "--ipv4=false") {
				subnet = nil
			}
			expectRefused(t, append(subnet, tc.args...), tc.want, before)
		})
	}

	t.Run("vni-clash", func(t *testing.T) {
		first := createNetwork(t, "e", "--subnet", "10.37.100.0/24", "--opt", "vni=5001")
		l := mustNetworkLink(t, first)
		if l.Name != "vxsec-5001" {
			t.Fatalf("network with --opt vni=5001 has link %s, want vxsec-5001", l.Name)
		}
		before := snapshotHost(t)
		expectRefused(t, []string{"--subnet", "10.37.101.0/24", "--opt", "vni=5001"},
			[]string{"5001", "already", short(first.ID)}, before)
		// The first network is intact.
		if l2 := mustNetworkLink(t, first); l2.Index != l.Index {
			t.Errorf("the refused create replaced the first network's link (ifindex %d -> %d)", l.Index, l2.Index)
		}
		c1 := runContainer(t, first)
		c2 := runContainer(t, first)
		mustPing(t, c1, c2.IP, "inside the first vni=5001 network after the refused clash")
	})
}

// hostSnapshot is what a refused create must leave as it was.
type hostSnapshot struct {
	links, tables, state []string
}

func snapshotHost(t *testing.T) hostSnapshot {
	t.Helper()
	return hostSnapshot{links: vxsecLinks(t), tables: nftVxsecTables(t), state: stateFiles(t, plugin(t))}
}

func expectRefused(t *testing.T, args, want []string, before hostSnapshot) {
	t.Helper()
	name := uniqueName("bad")
	full := append([]string{"network", "create", "-d", driverName}, args...)
	full = append(full, name)
	out, err := docker(full...)
	if err == nil {
		// Do not leave it behind.
		_, _ = docker("network", "rm", name)
		t.Fatalf("docker %s was accepted, want refused", strings.Join(full, " "))
	}
	lower := strings.ToLower(out)
	for _, w := range want {
		if !strings.Contains(lower, strings.ToLower(w)) {
			t.Errorf("error for %v does not mention %q:\n%s", args, w, out)
		}
	}
	t.Logf("refused %v: %s", args, strings.TrimSpace(out))
	if o, err := docker("network", "inspect", name); err == nil {
		_, _ = docker("network", "rm", name)
		t.Errorf("the refused network %s exists in Docker:\n%s", name, o)
	}
	ls := mustDocker(t, "network", "ls", "--format", "{{.Name}}")
	if slices.Contains(strings.Fields(ls), name) {
		t.Errorf("docker network ls lists the refused network %s", name)
	}
	after := snapshotHost(t)
	if !slices.Equal(after.links, before.links) {
		t.Errorf("vxsec host links changed by a refused create: before %v, after %v", before.links, after.links)
	}
	if !slices.Equal(after.tables, before.tables) {
		t.Errorf("nftables vxsec tables changed by a refused create: before %v, after %v", before.tables, after.tables)
	}
	if !slices.Equal(after.state, before.state) {
		t.Errorf("the plugin's state files changed by a refused create: before %v, after %v", before.state, after.state)
	}
}
