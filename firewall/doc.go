// Package firewall owns vxsec's nftables tables, through netlink, so the
// plugin image needs no iptables or nft binary.
//
// Drop is final in nftables whatever other tables say, so the tables are
// vxsec's own and never depend on rule order in anybody else's chains
// (the fault of CVE-2023-28840). They exist only while a vxsec network
// does, and are programmed before any VXLAN device exists.
package firewall
