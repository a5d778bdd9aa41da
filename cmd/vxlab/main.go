// Command vxlab runs vxsec's multi-host lab on one machine: every host is a
// network namespace on a shared underlay bridge running a real `vxsec
// daemon`, every container a namespace attached through the remote API
// exactly as dockerd attaches one.
//
//	vxlab demo    a 3-host cluster, one network, pings across hosts, a host
//	              dying and coming back, all narrated, then torn down
//	vxlab bench   convergence, scale and data-path figures, with method
//
// It needs root (network namespaces) and a built vxsec binary (`make build`).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	var bin string
	root := &cobra.Command{
		Use:           "vxlab",
		Short:         "vxsec's multi-host lab on one machine: demo and benchmarks",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("needs root (it makes network namespaces)")
			}
			abs, err := filepath.Abs(bin)
			if err != nil {
				return err
			}
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("vxsec binary: %w (run `make build` first, or pass --bin)", err)
			}
			bin = abs
			return nil
		},
	}
	root.PersistentFlags().StringVar(&bin, "bin", "./bin/vxsec", "the vxsec binary every lab host runs")
	root.AddCommand(demoCmd(&bin), benchCmd(&bin))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "vxlab: FAIL:", err)
		os.Exit(1)
	}
}
