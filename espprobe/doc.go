// Package espprobe sends the probes by which a peer learns whether native
// ESP (IP protocol 50) from this host reaches it. The peer's firewall
// records the source of every ESP packet from a member (firewall.ESPSeen),
// data and probes alike; a peer that records none receives from this host
// in UDP instead (VXSEC_ESP_ENCAP=auto, package ipsec).
package espprobe
