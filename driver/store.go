package driver

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vxsec/vxsec/atomicfile"
)

// Store persists the desired state as one file per network, each replaced
// atomically, so a crash leaves either the old or the new version of a
// network and never half of one.
type Store struct {
	dir string
}

const (
	networkFilePrefix = "network-"
	networkFileSuffix = ".json"
)

// OpenStore uses dir, creating it if needed.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Load reads every persisted network. Leftover temporary files of an
// interrupted write are removed: the rename never happened, so the old
// version stands.
func (s *Store) Load() (map[string]*Network, error) {
	if err := atomicfile.RemoveTemps(s.dir); err != nil {
		return nil, fmt.Errorf("removing interrupted writes: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading state directory: %w", err)
	}
	nets := map[string]*Network{}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, networkFilePrefix) || !strings.HasSuffix(name, networkFileSuffix) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", name, err)
		}
		var n Network
		if err := json.Unmarshal(data, &n); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", name, err)
		}
		if n.ID == "" || fileName(n.ID) != name {
			return nil, fmt.Errorf("%s: holds network %q, not the one its name says", name, n.ID)
		}
		if n.Endpoints == nil {
			n.Endpoints = map[string]*Endpoint{}
		}
		// Put never writes a null endpoint, but a damaged file may hold
		// one: accepted, it crashed the daemon at start on a nil pointer
		// (reconcile and clone read every endpoint). The regression input is
		// testdata/fuzz/FuzzStoreLoad/null-endpoint.
		for id, ep := range n.Endpoints {
			if ep == nil {
				return nil, fmt.Errorf("%s: endpoint %q of network %q is empty", name, id, n.ID)
			}
		}
		nets[n.ID] = &n
	}
	return nets, nil
}

func fileName(id string) string { return networkFilePrefix + id + networkFileSuffix }

// Put persists n, replacing any earlier version.
func (s *Store) Put(n *Network) error {
	data, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding network %s: %w", n.ID, err)
	}
	if err := atomicfile.Write(s.dir, fileName(n.ID), data); err != nil {
		return fmt.Errorf("persisting network %s: %w", n.ID, err)
	}
	return nil
}

// Delete removes a network's file; a missing one is not an error.
func (s *Store) Delete(id string) error {
	if err := atomicfile.Remove(s.dir, fileName(id)); err != nil {
		return fmt.Errorf("removing network %s: %w", id, err)
	}
	return nil
}
