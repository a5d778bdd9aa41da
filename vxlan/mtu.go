package vxlan

// Overhead is what VXLAN adds to a container's packet on the underlay: the
// outer IP header, UDP (8), VXLAN (8) and the inner Ethernet header (14).
func Overhead(ipv6Underlay bool) int {
	if ipv6Underlay {
		return 40 + 8 + 8 + 14
	}
	return 20 + 8 + 8 + 14
}
