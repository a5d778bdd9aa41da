// Package ipam is vxsec's address allocator, served to Docker as an IPAM
// driver. Docker's default IPAM refuses two pools that overlap in one
// address space, so two vxsec networks could never share a subnet; here
// every pool is its own space. Pools and addresses persist as one file per
// pool, replaced atomically, and the file goes with the pool.
package ipam
