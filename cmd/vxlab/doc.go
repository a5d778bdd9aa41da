// Command vxlab runs vxsec's multi-host lab on one machine: every host is a
// network namespace on a shared underlay bridge running a real `vxsec
// daemon`, every container a namespace attached through the remote API
// exactly as dockerd attaches one.
//
//	vxlab demo    a 3-host cluster, one network, pings across hosts, a host
//	              dying and coming back, all narrated, then torn down
//	vxlab bench   convergence, scale and data-path figures, with method;
//	              -results DIR also writes them as JSON (internal/benchdata)
//	vxlab report  the results as Markdown with SVG plots (internal/benchreport)
//
// demo and bench need root (network namespaces) and a built vxsec binary
// (`make build`); report needs neither.
// Flags take one dash or two (-only or --only).
package main
