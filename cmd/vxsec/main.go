// Command vxsec is the vxsec Docker network plugin and its tools.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/vxsec/vxsec/config"
)

// version is set at build time.
var version = "dev"

func main() {
	root := &cobra.Command{
		Use:           "vxsec",
		Short:         "vxsec: VXLAN overlay networks for Docker, one firewalled segment per network",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(daemonCmd(), secretCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "vxsec:", err)
		os.Exit(1)
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), version) },
	}
}

func secretCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "secret",
		Short: "print a fresh cluster secret for VXSEC_SECRET",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, config.SecretBytes)
			if _, err := rand.Read(b); err != nil {
				return fmt.Errorf("reading randomness: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), base64.StdEncoding.EncodeToString(b))
			return nil
		},
	}
}
