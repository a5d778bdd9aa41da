package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/vxsec/vxsec/config"
	"github.com/vxsec/vxsec/plugin"
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
	root.AddCommand(daemonCmd(), secretCmd(), caCmd(), leaveCmd(), rotateCmd(), rotateSecretCmd(), evictCmd(), reconcileCmd(), statusCmd(), doctorCmd(), versionCmd())
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

func socketFlag(cmd *cobra.Command) *string {
	return cmd.Flags().String("socket", config.DefaultSocket, "the daemon's socket (default: "+config.DefaultSocket+
		", or the managed plugin's, /run/docker/plugins/<plugin id>/vxsec.sock, found by itself when there is one)")
}

// daemonClient talks to the daemon at sock. Unless --socket was given, a
// missing default socket is looked for where Docker puts a managed
// plugin's: one found there is used, so no plugin ID need be looked up.
func daemonClient(cmd *cobra.Command, sock string) *plugin.Client {
	if cmd.Flags().Changed("socket") {
		return plugin.NewClient(sock)
	}
	if _, err := os.Stat(sock); err == nil {
		return plugin.NewClient(sock)
	}
	if found, _ := filepath.Glob(pluginSockets); len(found) == 1 {
		return plugin.NewClient(found[0])
	}
	return plugin.NewClient(sock)
}

// pluginSockets is where a managed plugin's socket is on the host.
const pluginSockets = "/run/docker/plugins/*/vxsec.sock"

func leaveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "leave",
		Short: "make the daemon leave the cluster gracefully, before decommissioning a host: peers forget its endpoints at once",
		Args:  cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.Leave", struct{}{}, nil)
	}
	return cmd
}

func rotateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "start a new IPsec key epoch now (as VXSEC_ROTATE_EVERY does, or SIGUSR1); peers switch to it without loss",
		Args:  cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.Rotate", struct{}{}, nil)
	}
	return cmd
}

func evictCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "evict NODE-ID...",
		Short: "cut swarm nodes off the vxsec cluster (on a swarm manager, after `docker node rm`): every node drops " +
			"their tables and refuses their pulls and exchanges, and the cluster secret rotates without them",
		Args: cobra.MinimumNArgs(1),
	}
	sock := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var out json.RawMessage
		if err := daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.Evict", plugin.EvictRequest{Nodes: args}, &out); err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), string(out))
		return nil
	}
	return cmd
}

func rotateSecretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "rotate-secret",
		Short: "issue a new cluster secret (on a swarm manager): every node moves to it within seconds, " +
			"gossip keeps the old one's keys for 2 minutes, IPsec keys are not touched",
		Args: cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var out json.RawMessage
		if err := daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.RotateSecret", struct{}{}, &out); err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), string(out))
		return nil
	}
	return cmd
}

func reconcileCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "make the kernel match vxsec's state now (devices, entries, firewall, IPsec), as the daemon does every 30 s",
		Args:  cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.Reconcile", struct{}{}, nil)
	}
	return cmd
}

func statusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "print the daemon's state for people (warnings, members, networks, peers' keys, drops), or as JSON with --json",
		Args:  cobra.NoArgs,
	}
	sock := socketFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print everything as JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var raw json.RawMessage
		if err := daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.Status", struct{}{}, &raw); err != nil {
			return fmt.Errorf("%w (is the plugin enabled? `docker plugin ls`; without the vxsec binary on the host: curl -s http://%s/status)",
				err, config.DefaultMetricsAddr)
		}
		if *asJSON {
			var out bytes.Buffer
			json.Indent(&out, raw, "", "  ")
			fmt.Fprintln(cmd.OutOrStdout(), out.String())
			return nil
		}
		var st daemonStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("reading the daemon's status: %w", err)
		}
		writeStatus(cmd.OutOrStdout(), st, time.Now())
		return nil
	}
	return cmd
}
