// Package gossip runs vxsec's cluster: hashicorp/serf for membership and
// failure detection, and a pull channel for every host's table of networks
// and endpoints.
//
// Serf's user events are small, best effort and never replayed to a host
// that joins later, so they cannot carry state. Instead each host's table
// has a version, published in a serf tag: a member whose tag shows a newer
// version than what this host installed is pulled from, directly, over the
// gossip port. Late joiners and restarted hosts see every member's tag and
// pull everything; a periodic pass repairs whatever a lost event missed.
// Each host is the only author of its table and versions only grow, so an
// older table never replaces a newer one: a leave is never undone by an
// older join.
package gossip

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Table is everything one host publishes: its networks and endpoints.
type Table struct {
	Host      netip.Addr       `json:"host"`
	Version   Version          `json:"version"`
	Networks  []NetworkRecord  `json:"networks,omitempty"`
	Endpoints []EndpointRecord `json:"endpoints,omitempty"`
	// The IPsec negotiation (package ipsec): published only by hosts with
	// an encrypted network. Public keys are public; private keys and SA
	// keys never leave a host.
	Keys  []KeyRecord   `json:"keys,omitempty"`
	SPIs  []SPIRecord   `json:"spis,omitempty"`
	Using []UsingRecord `json:"using,omitempty"`
}

// KeyRecord is the public half of one of the host's live key epochs.
type KeyRecord struct {
	Epoch  uint64 `json:"epoch"`
	Public []byte `json:"public"`
}

// SPIRecord: the host receives from Peer's epoch PeerEpoch, under its own
// Epoch, on SPI (an SA it installed before publishing this).
type SPIRecord struct {
	Peer      netip.Addr `json:"peer"`
	PeerEpoch uint64     `json:"peerEpoch"`
	Epoch     uint64     `json:"epoch"`
	SPI       uint32     `json:"spi"`
}

// UsingRecord: the host sends to Peer with its Epoch and Peer's PeerEpoch,
// on SPI.
type UsingRecord struct {
	Peer      netip.Addr `json:"peer"`
	Epoch     uint64     `json:"epoch"`
	PeerEpoch uint64     `json:"peerEpoch"`
	SPI       uint32     `json:"spi"`
}

// NetworkRecord is one network of a host, as others need to know it to
// detect two networks claiming one VNI.
type NetworkRecord struct {
	ID        string         `json:"id"`
	VNI       uint32         `json:"vni"`
	Subnets   []netip.Prefix `json:"subnets,omitempty"`
	Encrypted bool           `json:"encrypted,omitempty"`
	Created   time.Time      `json:"created"`
}

// EndpointRecord is one endpoint of a host.
type EndpointRecord struct {
	VNI     uint32           `json:"vni"`
	IP      netip.Addr       `json:"ip"`
	MAC     net.HardwareAddr `json:"mac"`
	Created time.Time        `json:"created"`
}

// Version orders a host's tables: Epoch is the start time of the daemon
// that wrote it (so a restart always moves forward), Seq counts changes
// within that run.
type Version struct {
	Epoch int64  `json:"epoch"`
	Seq   uint64 `json:"seq"`
}

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool {
	if v.Epoch != o.Epoch {
		return v.Epoch < o.Epoch
	}
	return v.Seq < o.Seq
}

// IsZero reports whether v is no version at all.
func (v Version) IsZero() bool { return v == Version{} }

// String is the tag form, "epoch.seq".
func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Epoch, v.Seq) }

// ParseVersion reads the tag form.
func ParseVersion(s string) (Version, error) {
	e, q, ok := strings.Cut(s, ".")
	if !ok {
		return Version{}, fmt.Errorf("version %q: want epoch.seq", s)
	}
	epoch, err1 := strconv.ParseInt(e, 10, 64)
	seq, err2 := strconv.ParseUint(q, 10, 64)
	if err1 != nil || err2 != nil {
		return Version{}, fmt.Errorf("version %q: want epoch.seq in whole numbers", s)
	}
	return Version{Epoch: epoch, Seq: seq}, nil
}
