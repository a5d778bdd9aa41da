// Package metrics serves vxsec's Prometheus metrics: what the daemon's
// parts count, read at each scrape (Snapshot), the remote API calls as
// they happen (Observe), and serf's and memberlist's own metrics, bridged
// from hashicorp/go-metrics. Every label is bounded by the cluster: a
// lock, a method, a member state, a peer; never an endpoint or a network.
// docs/operations.md lists every metric.
package metrics
