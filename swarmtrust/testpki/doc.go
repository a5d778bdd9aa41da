// Package testpki writes swarm directories for tests: a root CA and node
// certificates shaped as swarmkit makes them (ECDSA P-256, O=<cluster>,
// OU=swarm-manager|swarm-worker, CN=<node>, issuer CN=swarm-ca, PKCS#8 key
// with swarmkit's PEM headers) and state.json. The swarm lab checks the same
// code against a real swarm.
package testpki
