package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Store persists the desired state as one file per network, each replaced
// atomically (write, fsync, rename, fsync the directory), so a crash leaves
// either the old or the new version of a network and never half of one.
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

func (s *Store) path(id string) string {
	return filepath.Join(s.dir, networkFilePrefix+id+networkFileSuffix)
}

// Load reads every persisted network. Leftover temporary files of an
// interrupted write are removed: the rename never happened, so the old
// version stands.
func (s *Store) Load() (map[string]*Network, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading state directory: %w", err)
	}
	nets := map[string]*Network{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".tmp-") {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return nil, fmt.Errorf("removing interrupted write %s: %w", name, err)
			}
			continue
		}
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
		if n.ID == "" || s.path(n.ID) != filepath.Join(s.dir, name) {
			return nil, fmt.Errorf("%s: holds network %q, not the one its name says", name, n.ID)
		}
		if n.Endpoints == nil {
			n.Endpoints = map[string]*Endpoint{}
		}
		nets[n.ID] = &n
	}
	return nets, nil
}

// Put persists n, replacing any earlier version.
func (s *Store) Put(n *Network) error {
	data, err := json.MarshalIndent(n, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding network %s: %w", n.ID, err)
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("persisting network %s: %w", n.ID, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("persisting network %s: %w", n.ID, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("persisting network %s: %w", n.ID, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("persisting network %s: %w", n.ID, err)
	}
	if err := os.Rename(tmp.Name(), s.path(n.ID)); err != nil {
		return fmt.Errorf("persisting network %s: %w", n.ID, err)
	}
	return s.syncDir()
}

// Delete removes a network's file; a missing one is not an error.
func (s *Store) Delete(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing network %s: %w", id, err)
	}
	return s.syncDir()
}

func (s *Store) syncDir() error {
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("syncing state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing state directory: %w", err)
	}
	return nil
}
