// Package plugin serves libnetwork's remote network driver API on a unix
// socket and translates it onto the driver. It knows the protocol's traps;
// the driver knows networks.
package plugin
