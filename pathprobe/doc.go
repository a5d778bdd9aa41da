// Package pathprobe sends the probes by which a member learns whether the
// data port of every other member is reachable from it, at full size: every
// Every, to each peer's data port, a small and a full-size UDP datagram
// with DF set. The peer's firewall records their sources (firewall.PathSeen)
// and `vxsec doctor` asks every member what it recorded.
//
// A probe is shaped as VXLAN with VNI 0, which no vxsec network uses, so the
// receiver's kernel VXLAN device drops it after its firewall saw it; a magic
// after the VXLAN header says which probe it is. Probes leave from a socket
// carrying Mark, which is how the sender's own local-injection lock tells
// them from a tenant's hand-made VXLAN (setting a mark needs CAP_NET_ADMIN,
// or CAP_NET_RAW since Linux 5.17; never an unprivileged user).
package pathprobe
