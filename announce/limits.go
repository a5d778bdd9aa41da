package announce

import "fmt"

// Bounds on one host's table, the same on every host. A host refuses (and
// logs) a pulled table over any of them instead of installing it, so that a
// member, through a bug or in an attacker's hands, cannot make every other
// host hold, program and re-pull without end; and the driver refuses, with
// the limit named, the change that would take this host's own table over.
//
// They are sized from the largest cluster vxsec is built for, designHosts
// hosts, with room to spare:
//   - endpoints: a container on a network is an endpoint; 4096 is several
//     times what a host runs (Kubernetes' default is 110 pods a node,
//     Docker hosts with a thousand containers are rare);
//   - networks: 1024 VXLAN devices on one host is far beyond any use seen;
//   - keys: a host's live IPsec epochs. Normally one, two while a rotation
//     drains; only rotations forced faster than peers confirm them (at
//     most DrainMax, 2 minutes) pile up more;
//   - SPIs: one per own epoch × peer epoch × peer, normally 1 to 4 a peer;
//     16 a peer for designHosts peers;
//   - using: one per peer;
//   - bytes: every count at its limit, with the longest values (IPv6 peer
//     addresses, 64-bit epochs), takes about 3 MiB of JSON
//     (TestLimitsHoldAFullTable checks it); 4 MiB is also what a pull may
//     make a host buffer, since the table is sent whole.
const (
	designHosts         = 1024
	MaxEndpointsPerHost = 4096
	MaxNetworksPerHost  = 1024
	MaxKeysPerHost      = 16
	MaxSPIsPerHost      = 16 * designHosts
	MaxUsingPerHost     = designHosts
	MaxTableBytes       = 4 << 20
)

// LimitError says which bound a table broke.
type LimitError struct {
	Host  string
	What  string
	Count int
	Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("table of host %s has %d %s, over the limit of %d per host", e.Host, e.Count, e.What, e.Limit)
}

// Check refuses a table over the bounds; size is its encoded length.
func Check(t Table, size int) error {
	for _, c := range []struct {
		what         string
		count, limit int
	}{
		{"bytes", size, MaxTableBytes},
		{"endpoints", len(t.Endpoints), MaxEndpointsPerHost},
		{"networks", len(t.Networks), MaxNetworksPerHost},
		{"IPsec keys", len(t.Keys), MaxKeysPerHost},
		{"IPsec SPIs", len(t.SPIs), MaxSPIsPerHost},
		{"IPsec peers in use", len(t.Using), MaxUsingPerHost},
	} {
		if c.count > c.limit {
			return &LimitError{Host: t.Host.String(), What: c.what, Count: c.count, Limit: c.limit}
		}
	}
	for _, k := range t.Keys {
		if len(k.ID) > MaxKeyID {
			return &LimitError{Host: t.Host.String(), What: "bytes in a key's identity", Count: len(k.ID), Limit: MaxKeyID}
		}
	}
	return nil
}
