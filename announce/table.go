package announce

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Table is everything one host publishes. Its JSON form is the wire
// format: field names and shapes change only with a new pull version.
type Table struct {
	Host     netip.Addr `json:"host"`
	Version  Version    `json:"version"`
	Networks []Network  `json:"networks,omitempty"`
	// Endpoints are those of every network, each naming its network's VNI.
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// IPsec is published only by hosts with an encrypted network (its
	// fields are inlined in the JSON form).
	IPsec
	// CRL is the number of the cluster CA's revocation list the host
	// holds (host identities): a host that adopts a newer one publishes a
	// new table, so its peers pull the list with it.
	CRL uint64 `json:"crl,omitempty"`
}

// Network is one network of a host, as others need to know it to detect
// two networks claiming one VNI.
type Network struct {
	ID        string         `json:"id"`
	VNI       uint32         `json:"vni"`
	Subnets   []netip.Prefix `json:"subnets,omitempty"`
	Encrypted bool           `json:"encrypted,omitempty"`
	Created   time.Time      `json:"created"`
}

// Endpoint is one endpoint of a host.
type Endpoint struct {
	VNI     uint32           `json:"vni"`
	IP      netip.Addr       `json:"ip"`
	MAC     net.HardwareAddr `json:"mac"`
	Created time.Time        `json:"created"`
}

// IPsec is a host's side of the key negotiation (package ipsec describes
// the protocol). Public keys are public; private keys and SA keys never
// leave a host.
type IPsec struct {
	Keys  []Key   `json:"keys,omitempty"`
	SPIs  []SPI   `json:"spis,omitempty"`
	Using []Using `json:"using,omitempty"`
	// UDP is the port of the host's ESP-in-UDP socket (RFC 3948): the
	// host receives on SPIs marked UDP there. 0 from releases before it.
	UDP uint16 `json:"udp,omitempty"`
	// Encap is EncapUDP when the host wants ESP in UDP both ways with
	// every peer (VXSEC_ESP_ENCAP=udp): peers then receive from it in
	// UDP too.
	Encap string `json:"encap,omitempty"`
	// NAT: the host is behind NAT (the address it advertises is a NAT's,
	// which forwards to it); it sets Encap to EncapUDP too, and peers in
	// auto mode receive from it in UDP, the encapsulation NATs pass.
	NAT bool `json:"nat,omitempty"`
}

// EncapUDP is IPsec.Encap of a host that wants ESP in UDP.
const EncapUDP = "udp"

// Key is the public half of one of the host's live key epochs.
type Key struct {
	Epoch  uint64 `json:"epoch"`
	Public []byte `json:"public"`
	// ID is the host identity the epoch's SA keys are bound to (its
	// certificate's CN, or its swarm node ID), fixed when the epoch is
	// made. Empty from hosts without one and from releases before it:
	// their SAs use the address-bound schedule (package ipsec).
	ID string `json:"id,omitempty"`
}

// MaxKeyID bounds Key.ID: a certificate CN is at most 64 characters, a
// swarm node ID 25.
const MaxKeyID = 255

// SPI says: the host receives from Peer's epoch PeerEpoch, under its own
// Epoch, on SPI. The host installed that SA before publishing this.
type SPI struct {
	Peer      netip.Addr `json:"peer"`
	PeerEpoch uint64     `json:"peerEpoch"`
	Epoch     uint64     `json:"epoch"`
	SPI       uint32     `json:"spi"`
	// UDP: the SA takes ESP in UDP, sent to the host's IPsec.UDP port;
	// native ESP (IP protocol 50) otherwise. The receiver chooses, since
	// the kernel delivers on an SA only what arrives as it was made.
	UDP bool `json:"udp,omitempty"`
}

// Using says: the host sends to Peer with its Epoch and Peer's PeerEpoch,
// on SPI (the one Peer chose).
type Using struct {
	Peer      netip.Addr `json:"peer"`
	Epoch     uint64     `json:"epoch"`
	PeerEpoch uint64     `json:"peerEpoch"`
	SPI       uint32     `json:"spi"`
}

// Version orders a host's tables. Epoch is the start time of the daemon
// that wrote the table, so a restart always moves forward. Seq counts
// changes within that run.
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
