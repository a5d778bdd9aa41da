package driver

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/ipsec"
)

func TestEncryptionNeedsIPsecASecretAndIdentities(t *testing.T) {
	mgr := ipsec.NewManager(ipsec.ManagerConfig{Local: netip.MustParseAddr("198.18.0.1"), Log: slog.Default()})
	cases := []struct {
		name string
		cfg  Config
		want string // "" means accepted
	}{
		{"no-ipsec", Config{Authenticated: true, Identified: true}, "runs without IPsec"},
		{"no-secret", Config{IPsec: mgr}, "VXSEC_SECRET"},
		{"secret-only", Config{IPsec: mgr, Authenticated: true}, "VXSEC_IDENTITY_DIR"},
		{"ok", Config{IPsec: mgr, Authenticated: true, Identified: true}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, cfg: tc.cfg}).checkEncryption()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEncryptedNetworkUsesItsPortAndESPMTU(t *testing.T) {
	d := &Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, cfg: Config{EncryptedPort: 4801}}
	plain := d.dpNetwork(&Network{VNI: 1, MTU: 1450})
	enc := d.dpNetwork(&Network{VNI: 2, MTU: 1408, Options: Options{Encrypted: true}})
	if plain.Port != 0 || enc.Port != 4801 {
		t.Fatalf("ports: plain %d (want the data path's default), encrypted %d (want 4801)", plain.Port, enc.Port)
	}
	if got := ipsec.ContainerMTU(1500, false); got != 1408 {
		t.Fatalf("encrypted container MTU on a 1500 underlay = %d, want 1408", got)
	}
	fw := (&Driver{now: time.Now, op: make(chan struct{}, 1), seen: map[claim]time.Time{}, ignored: map[claim]bool{}, cfg: Config{DataPort: 4800, EncryptedPort: 4801}}).fwStateLocked()
	if len(fw.SecurePorts) != 1 || fw.SecurePorts[0] != 4801 || len(fw.DataPorts) != 2 {
		t.Fatalf("firewall state %+v: want members-only on 4800 and 4801, and a secpath on 4801", fw)
	}
}

// TestProbeESP: a probe round goes to the peers that take part in IPsec
// (their tables announce keys), from the underlay address, and the members
// the firewall saw native ESP from go to the keys; with no encrypted
// network (IPsec inactive) nothing is sent.
func TestProbeESP(t *testing.T) {
	h := newHarness(t)
	var sent [][]netip.Addr
	h.d.cfg.ProbeESP = func(local netip.Addr, peers []netip.Addr, seq uint32) error {
		if local != testLocal {
			t.Errorf("probes from %s, want the underlay address %s", local, testLocal)
		}
		slices.SortFunc(peers, func(a, b netip.Addr) int { return a.Compare(b) })
		sent = append(sent, peers)
		return nil
	}
	keyed, plain := netip.MustParseAddr("198.18.0.7"), netip.MustParseAddr("198.18.0.8")
	h.d.SetRemote(announce.Table{Host: keyed, Version: announce.Version{Epoch: 1, Seq: 1},
		IPsec: announce.IPsec{Keys: []announce.Key{{Epoch: 1, Public: make([]byte, 32)}}}})
	h.d.SetRemote(announce.Table{Host: plain, Version: announce.Version{Epoch: 1, Seq: 1}})
	h.k.espSeen = []netip.Addr{keyed}

	h.d.probeESP(ctxb(), 1)
	if len(sent) != 0 || h.k.nativeESP != nil {
		t.Fatalf("with IPsec inactive: probe rounds %v, keys told %v; want none", sent, h.k.nativeESP)
	}
	if err := h.d.CreateNetwork(ctxb(), CreateNetworkRequest{ID: "enc", Options: map[string]string{OptVNI: "9", OptEncrypted: "true"},
		IPv4: []IPAMData{{Pool: "10.9.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	h.d.probeESP(ctxb(), 2)
	if len(sent) != 1 || len(sent[0]) != 1 || sent[0][0] != keyed {
		t.Fatalf("probe rounds %v, want one to [%s] (the peer with keys)", sent, keyed)
	}
	if len(h.k.nativeESP) != 1 || h.k.nativeESP[0] != keyed {
		t.Fatalf("the keys were told %v, want [%s] (what the firewall saw)", h.k.nativeESP, keyed)
	}
}
