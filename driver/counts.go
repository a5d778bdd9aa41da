package driver

import (
	"sync/atomic"
	"time"
)

// counts are the driver's running totals since it started, for metrics.
type counts struct {
	reconciles, reconcileFailures atomic.Uint64
	// tables counts the remote tables taken (newer than the one held),
	// passes the passes that applied them to the kernel, applyLag how long
	// the last pass's oldest table had waited until the pass ended.
	tables, passes atomic.Uint64
	applyLag       atomic.Int64
}

// Counts is a snapshot of the driver's running totals.
type Counts struct {
	Reconciles, ReconcileFailures uint64
	TablesTaken, PeerPasses       uint64
	// ApplyLag is how long the last pass's oldest table waited, from its
	// arrival until its entries were in the kernel.
	ApplyLag time.Duration
}

// Counts returns the running totals; it takes no lock.
func (d *Driver) Counts() Counts {
	return Counts{
		Reconciles: d.counts.reconciles.Load(), ReconcileFailures: d.counts.reconcileFailures.Load(),
		TablesTaken: d.counts.tables.Load(), PeerPasses: d.counts.passes.Load(),
		ApplyLag: time.Duration(d.counts.applyLag.Load()),
	}
}
