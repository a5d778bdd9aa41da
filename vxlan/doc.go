// Package vxlan programs vxsec's data path in the host's network namespace:
// one VXLAN device per network, and per container a macvlan device in
// bridge mode on top of it, which Docker moves into the container.
//
// Every device lives in the host namespace, not in a namespace of the
// plugin's, because Docker unmounts a managed plugin's mounts when it is
// disabled or the engine stops: a namespace held only by the plugin would
// die and take every container's interface with it. No Linux bridge is
// involved (macvlan switches between containers of one host), so Docker's
// br_netfilter and FORWARD policy never see overlay traffic, and no device
// holds an address, so the host routes nothing into or between networks.
package vxlan
