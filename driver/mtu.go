package driver

import (
	"fmt"

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
