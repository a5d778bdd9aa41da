package driver

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func sampleNetwork(id string) *Network {
	return &Network{
		ID: id, VNI: 42, MTU: 1450,
		Options:  Options{VNI: 42, UnderlayMTU: 1500},
		Subnets:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		Endpoints: map[string]*Endpoint{"ep1": {
			ID: "ep1", Address: netip.MustParsePrefix("10.0.0.2/24"),
			MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Joined: true,
		}},
	}
}

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := sampleNetwork("n1")
	if err := s.Put(n); err != nil {
		t.Fatal(err)
	}
	n.Endpoints["ep1"].Joined = false // a later version replaces the first
	if err := s.Put(n); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got["n1"], n) {
		t.Fatalf("loaded %+v, want %+v", got["n1"], n)
	}
	if err := s.Delete("n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("n1"); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files left after delete: %v", entries)
	}
}

func TestStoreInterruptedWrite(t *testing.T) {
	dir := t.TempDir()
	s, _ := OpenStore(dir)
	if err := s.Put(sampleNetwork("n1")); err != nil {
		t.Fatal(err)
	}
	// A crash between write and rename leaves a temporary file: the old
	// version stands and the leftover goes.
	tmp := filepath.Join(dir, ".tmp-123")
	if err := os.WriteFile(tmp, []byte(`{"id":"n1","vni":`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got["n1"] == nil || got["n1"].VNI != 42 {
		t.Fatalf("Load = %v, %v", got, err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("leftover temporary file not removed: %v", err)
	}
}

func TestStoreRefusesDamage(t *testing.T) {
	cases := map[string]string{
		"network-n1.json": `{"id":"n1",`,            // truncated
		"network-n2.json": `{"id":"other","vni":1}`, // misfiled
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			s, _ := OpenStore(dir)
			if _, err := s.Load(); err == nil {
				t.Fatal("Load of a damaged file: want an error, not silently lost state")
			}
		})
	}
}
