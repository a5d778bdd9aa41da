//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain runs the tests, then checks that nothing of vxsec is left once
// every test's cleanup has run: no vxsec network, no vxsec-*/vxe-* link, no
// nftables table named vxsec, no file in the plugin's state directory. Done
// here, it holds whatever order the tests ran in and whichever ran.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := waitNothingLeft(10 * time.Second); err != nil {
			fmt.Printf("--- FAIL: TestMain: after every test's cleanup, vxsec left: %v\nFAIL\n", err)
			code = 1
		} else {
			fmt.Println("ok: after every test's cleanup, nothing of vxsec is left (networks, links, nftables tables, state files)")
		}
	}
	os.Exit(code)
}

// waitNothingLeft polls leftovers until there are none or timeout passes:
// the plugin removes devices and files just after Docker's calls return.
func waitNothingLeft(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left, err := leftovers()
		if err == nil && len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return errors.New(strings.Join(left, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leftovers lists what of vxsec the host holds.
func leftovers() ([]string, error) {
	var left []string
	out, err := docker("network", "ls", "--no-trunc", "--filter", "driver="+driverName, "--format", "{{.Name}}")
	if err != nil {
		return nil, fmt.Errorf("docker network ls: %w: %s", err, out)
	}
	if nets := strings.Fields(out); len(nets) > 0 {
		left = append(left, fmt.Sprintf("vxsec networks %v", nets))
	}
	out, err = run(cmdTimeout, "ip", "-j", "link", "show")
	if err != nil {
		return nil, fmt.Errorf("ip link: %w: %s", err, out)
	}
	var links []hostLink
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("ip -j link show: %w", err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Name, linkPrefix) || strings.HasPrefix(l.Name, epPrefix) {
			left = append(left, "link "+l.Name)
		}
	}
	out, err = run(cmdTimeout, "nft", "list", "tables")
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" && f[2] == "vxsec" {
			left = append(left, "nftables table "+f[1]+" vxsec")
		}
	}
	id, err := docker("plugin", "inspect", "-f", "{{.Id}}", pluginName)
	if err != nil {
		return nil, fmt.Errorf("docker plugin inspect: %w: %s", err, id)
	}
	root, err := docker("info", "-f", "{{.DockerRootDir}}")
	if err != nil {
		return nil, fmt.Errorf("docker info: %w: %s", err, root)
	}
	dir := filepath.Join(strings.TrimSpace(root), "plugins", strings.TrimSpace(id), "propagated-mount")
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			left = append(left, "state file "+path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the plugin's state directory: %w", err)
	}
	return left, nil
}

// TestDeleteLeavesNothing: a network with containers holds its link, its
// nftables table and its state file; once its containers and the network
// are removed, none of them is left (the tests run one at a time, so
// nobody else's objects are there meanwhile).
func TestDeleteLeavesNothing(t *testing.T) {
	requirePlugin(t)
	p := plugin(t)
	t.Logf("plugin %s, state directory on the host: %s", short(p.ID), p.StateDir)

	n := createNetwork(t, "h", "--subnet", "10.40.0.0/24")
	c1 := runContainer(t, n)
	c2 := runContainer(t, n)
	mustPing(t, c1, c2.IP, "inside the network before removing everything")
	if files := stateFiles(t, p); !containsString(files, "network-"+n.ID+".json") {
		t.Errorf("state directory %s does not hold network-%s.json while the network exists: %v", p.StateDir, n.ID, files)
	}
	if len(nftVxsecTables(t)) == 0 {
		t.Errorf("no nftables table named vxsec while a vxsec network exists")
	}

	// Remove everything explicitly (the cleanups then find nothing to do).
	mustDocker(t, "rm", "-f", c1.Name, c2.Name)
	mustDocker(t, "network", "rm", n.Name)
	if err := waitNothingLeft(10 * time.Second); err != nil {
		t.Fatalf("after removing its containers and network: %v", err)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
