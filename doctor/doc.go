// Package doctor decides what is wrong with a vxsec cluster from what its
// members say about themselves: pure logic, no kernel, no network.
//
// `vxsec doctor` asks every member, by a cluster query (gossip.Ask), for an
// Answer: its clock, its kernel's features, whether it sees the swarm
// directory, which members' path probes (package pathprobe) and native ESP
// reached it lately. Diagnose turns the answers and this host's view of the
// members into a Report: each problem found, where (a host, or a path
// "A → B"), and how to fix it.
package doctor
