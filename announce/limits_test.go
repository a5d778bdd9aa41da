package announce

import (
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fullTable is a table at every count bound, with the longest values each
// field takes.
func fullTable() Table {
	created := time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", -(11*3600+59*60)))
	peer := netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")
	t := Table{Host: peer, Version: Version{Epoch: math.MaxInt64, Seq: math.MaxUint64}}
	for range MaxNetworksPerHost {
		t.Networks = append(t.Networks, Network{
			ID: strings.Repeat("f", 64), VNI: 1<<24 - 1, Encrypted: true, Created: created,
			Subnets: []netip.Prefix{netip.MustParsePrefix("255.255.255.0/24")},
		})
	}
	for range MaxEndpointsPerHost {
		t.Endpoints = append(t.Endpoints, Endpoint{
			VNI: 1<<24 - 1, IP: netip.MustParseAddr("255.255.255.255"), MAC: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, Created: created,
		})
	}
	for range MaxKeysPerHost {
		t.Keys = append(t.Keys, Key{Epoch: math.MaxUint64, Public: make([]byte, 32), ID: strings.Repeat("x", MaxKeyID)})
	}
	for range MaxSPIsPerHost {
		t.SPIs = append(t.SPIs, SPI{Peer: peer, PeerEpoch: math.MaxUint64, Epoch: math.MaxUint64, SPI: math.MaxUint32})
	}
	for range MaxUsingPerHost {
		t.Using = append(t.Using, Using{Peer: peer, Epoch: math.MaxUint64, PeerEpoch: math.MaxUint64, SPI: math.MaxUint32})
	}
	return t
}

// TestLimitsHoldAFullTable: a host within every count bound never breaks
// the size bound, so the driver's counts are all it must check.
func TestLimitsHoldAFullTable(t *testing.T) {
	full := fullTable()
	raw, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a full table is %.1f MiB; the bound is %d MiB", float64(len(raw))/(1<<20), MaxTableBytes>>20)
	if err := Check(full, len(raw)); err != nil {
		t.Fatal(err)
	}
}

func TestCheckTable(t *testing.T) {
	full := fullTable()
	cases := map[string]func(*Table) int{
		"endpoints":          func(t *Table) int { t.Endpoints = append(t.Endpoints, t.Endpoints[0]); return 0 },
		"networks":           func(t *Table) int { t.Networks = append(t.Networks, t.Networks[0]); return 0 },
		"IPsec keys":         func(t *Table) int { t.Keys = append(t.Keys, t.Keys[0]); return 0 },
		"IPsec SPIs":         func(t *Table) int { t.SPIs = append(t.SPIs, t.SPIs[0]); return 0 },
		"IPsec peers in use": func(t *Table) int { t.Using = append(t.Using, t.Using[0]); return 0 },
		"bytes":              func(*Table) int { return MaxTableBytes + 1 },
		"bytes in a key's identity": func(t *Table) int {
			t.Keys = append([]Key{}, t.Keys...)
			t.Keys[0].ID = strings.Repeat("x", MaxKeyID+1)
			return 0
		},
	}
	for what, over := range cases {
		tb := full
		size := over(&tb)
		err := Check(tb, size)
		var le *LimitError
		if !errors.As(err, &le) || le.What != what {
			t.Errorf("%s over the bound: err = %v", what, err)
		}
	}
}
