package driver

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

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
