// Package lab builds a multi-host vxsec lab on one machine: hosts are
// network namespaces on a shared underlay switch, each running a real
// `vxsec daemon`, and containers are namespaces attached through the same
// remote API calls dockerd makes. Tests, benchmarks and the demo use it.
//
// It drives iproute2 (`ip`) rather than netlink so that no goroutine ever
// changes namespace: every step is a process with its own.
package lab
