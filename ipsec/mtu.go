package ipsec

// udpEncap is the UDP header ESP in UDP adds (RFC 3948).
const udpEncap = 8

// ContainerMTU is the largest inner MTU whose VXLAN packet, carried in ESP
// transport mode with rfc4106(gcm(aes)), native or in UDP, still fits the
// underlay MTU:
//
//	outer IP + UDP (8) + ESP header (8) + IV (8) + pad4(payload + 2) + ICV (16) ≤ underlay
//
// where payload is UDP (8) + VXLAN (8) + Ethernet (14) + the inner MTU, and
// the 2 are ESP's pad-length and next-header bytes. On a 1500-byte IPv4
// underlay that is 1408, 1388 over IPv6 (Docker's overlay, native ESP with
// an 8-byte ICV, gives 1424).
func ContainerMTU(underlayMTU int, ipv6Underlay bool) int {
	// The UDP header of ESP in UDP is always reserved: a pair may move to
	// it at any time (a peer asks for it), and the MTU of a network cannot
	// follow per pair, so every encrypted network fits both.
	outerIP := 20 + udpEncap
	if ipv6Underlay {
		outerIP = 40 + udpEncap
	}
	const espHeader, iv, icv, trailer, encap = 8, 8, ICVBits / 8, 2, 8 + 8 + 14
	room := underlayMTU - outerIP - espHeader - iv - icv // what pad4(payload+2) may use
	room -= room % 4
	return room - trailer - encap
}
