// Package swarmtrust gives vxsec zero-config trust in swarm mode: it reads
// the engine's swarm directory (node certificate, root CA, the managers'
// addresses) and agrees the vxsec cluster secret with the other swarm nodes
// over mutual TLS, so that only holders of a certificate of this swarm ever
// learn it.
package swarmtrust
