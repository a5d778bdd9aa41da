// Package identity gives a host outside swarm a long-term identity: a
// certificate of a cluster CA that vxsec makes for the user (`vxsec ca`),
// naming the host and the underlay addresses it may speak for. A host signs
// every table it publishes with it, and every receiver checks that the
// signer's certificate chains to the cluster CA, is valid now, and names
// the address the table is for: holding the cluster secret no longer lets
// a member (or someone on the path of a pull) speak for another host.
package identity
