// Package driver keeps vxsec's desired state (networks and endpoints),
// persists it, and derives the kernel's state from it. Every call is
// idempotent: Docker repeats calls (swarm workers create a network each
// time a task lands) and a restarted plugin must accept what it did before.
//
// The kernel is reached only through the interfaces in kernel.go (the data
// path, the firewall, the IPsec negotiation), which the daemon fills with
// the real ones and the tests with a fake kernel that records what would
// be programmed.
//
// The order of effects is chosen so that a crash at any line leaves
// something the next start repairs:
//   - The firewall is active before any VXLAN device exists, and stays
//     while one does.
//   - The IPsec guard (Keys.Activate) is in place before an encrypted
//     network's device exists.
//   - Kernel objects are created before they are persisted, so an
//     unpersisted device is an orphan that the reconciler removes.
//   - Objects leave the store before the kernel, so a device left behind
//     is, again, an orphan.
//   - Once the last network is deleted, nothing of vxsec's is left: no
//     device, no firewall table, no xfrm state.
//
// Concurrency. Calls that change the kernel (Docker's calls, reconciles,
// IPsec syncs) are serialised by an operation lock. A caller waits for
// that lock within its context, so Docker's deadline bounds the wait. The
// state lock (mu) guards the maps and is never held across a kernel call
// or a store write. The cluster (the Sink methods, Snapshot) and status
// readers therefore never wait for the kernel.
//
// The desired state (nets, allocated) is written only while holding both
// locks. Holders of the operation lock may read it without mu. Everything
// the cluster writes (remote, dropped, members) is read under mu.
package driver
