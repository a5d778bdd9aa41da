package driver

import (
	"fmt"

	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/vxlan"
)

// minContainerMTU is the smallest MTU IPv4 allows a link (RFC 791).
const minContainerMTU = 68

// ContainerMTU derives the MTU of a network's containers from the underlay
// MTU, so that a full-size packet with DF set fits the underlay once
// encapsulated and one byte more is refused by the sender's own kernel.
func ContainerMTU(underlayMTU int, ipv6Underlay bool) (int, error) {
	overhead := vxlan.Overhead(ipv6Underlay)
	mtu := underlayMTU - overhead
	if mtu < minContainerMTU {
		return 0, fmt.Errorf("underlay MTU %d leaves containers %d bytes after %d of VXLAN; %s must be at least %d",
			underlayMTU, mtu, overhead, OptMTU, minContainerMTU+overhead)
	}
	return mtu, nil
}

// networkMTU is the containers' MTU of a network with options o on an
// underlay whose own MTU is underlayMTU (the option, if set, replaces it).
// It is apart from CreateNetwork so that the arithmetic can be fuzzed.
func networkMTU(o Options, underlayMTU int, ipv6Underlay bool) (int, error) {
	if o.UnderlayMTU != 0 {
		underlayMTU = o.UnderlayMTU
	}
	mtu, err := ContainerMTU(underlayMTU, ipv6Underlay)
	if err != nil {
		return 0, err
	}
	if o.Encrypted {
		mtu = ipsec.ContainerMTU(underlayMTU, ipv6Underlay)
		// ESP costs more than VXLAN alone: an underlay MTU that leaves a
		// plain network's containers enough (118..151 over IPv4) left an
		// encrypted one's below IPv4's minimum link MTU, which no device
		// takes; refused here, naming the option (found by
		// FuzzNetworkOptions).
		if mtu < minContainerMTU {
			least := underlayMTU
			for ipsec.ContainerMTU(least, ipv6Underlay) < minContainerMTU {
				least++
			}
			return 0, fmt.Errorf("underlay MTU %d leaves an encrypted network's containers %d bytes after VXLAN in ESP; %s must be at least %d for an encrypted network",
				underlayMTU, mtu, OptMTU, least)
		}
	}
	return mtu, nil
}
