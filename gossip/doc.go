// Package gossip runs vxsec's cluster: hashicorp/serf for membership and
// failure detection, and a pull channel for every host's table of networks
// and endpoints.
//
// Serf's user events are small, best effort and never replayed to a host
// that joins later, so they cannot carry state. Instead each host's table
// has a version, published in a serf tag: a member whose tag shows a newer
// version than what this host installed is pulled from, directly, over the
// gossip port. Late joiners and restarted hosts see every member's tag and
// pull everything; a periodic pass repairs whatever a lost event missed.
// Each host is the only author of its table and versions only grow, so an
// older table never replaces a newer one: a leave is never undone by an
// older join.
package gossip
