// Package announce defines what one host tells the cluster about itself:
// its networks, its endpoints and its side of the IPsec negotiation. It is
// the one definition of vxsec's replicated state. The driver writes a
// host's Table, gossip carries it as the bytes Encode makes, and every
// other host's driver and IPsec manager read it back with Decode.
//
// A Table has exactly one author, the host it names, and Versions only
// grow, so an older table never replaces a newer one.
//
// Encode's bytes are the unit the cluster moves and stores: a receiver
// keeps them as they came. That is what lets tables be signed. A signer
// covers the encoded bytes, and the signature travels next to them, never
// inside them, so nobody has to re-encode a table to check it.
//
// The package is a leaf. It imports nothing of vxsec's, so gossip, the
// driver and ipsec can all depend on it.
package announce
