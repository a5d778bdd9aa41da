// Package vip gives swarm services on vxsec networks their virtual IPs.
//
// Swarm allocates every service in the default endpoint mode a VIP on each
// of its networks, and Docker's DNS answers the service name with it, but
// Docker makes the load balancer behind it only for its own overlay driver
// (swarmkit's allocator and libnetwork's LB endpoint). On a vxsec network
// nothing answered the VIP. This package does, the way a client-side load
// balancer does: in every local container's network namespace on a vxsec
// network, a table of vxsec's own DNATs each service's VIP to one of its
// tasks' addresses, chosen at random per connection (conntrack keeps the
// choice for the connection's life and reverses it for the replies). The
// client's address is preserved, since nothing is SNATed, and every
// protocol is carried: TCP, UDP, ICMP.
//
// Where the tasks are comes from the local engine's API (GET
// /networks/{id}?verbose=true lists each service's VIP and its tasks'
// addresses on every swarm node, from libnetwork's own gossip), polled
// while a local container is on the network. The engine is never called
// inside a remote API call: a Join programs its container's namespace from
// what the last poll found.
package vip
