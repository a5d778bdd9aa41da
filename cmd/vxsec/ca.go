package main

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/vxsec/vxsec/identity"
	"github.com/vxsec/vxsec/plugin"
)

// caCmd makes the cluster CA and the hosts' identities outside swarm (in
// swarm mode the node certificates are the identities).
func caCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "make a cluster CA and host identities (outside swarm): `vxsec ca init`, then `vxsec ca issue` per host",
	}
	cmd.AddCommand(caInitCmd(), caIssueCmd(), caRevokeCmd(), caLoadCRLCmd())
	return cmd
}

func caInitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init",
		Short: "make a cluster CA in --dir (ca.crt, and ca.key, which stays on this machine)",
		Args:  cobra.NoArgs,
	}
	dir := cmd.Flags().String("dir", "vxsec-ca", "directory of the CA")
	name := cmd.Flags().String("name", "vxsec cluster CA", "the CA's name")
	validity := cmd.Flags().Duration("valid", identity.DefaultCAValidity, "how long the CA is valid")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := identity.InitCA(*dir, *name, *validity); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "cluster CA made in %s; keep %s there. Next, per host: vxsec ca issue --ca %s --addr <underlay address> --out <dir> <host>\n",
			*dir, filepath.Join(*dir, identity.CAKeyFile), *dir)
		return nil
	}
	return cmd
}

func caIssueCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "issue HOST",
		Short: "issue HOST's identity into --out (host.crt, host.key, ca.crt): give that directory to the host's daemon as VXSEC_IDENTITY_DIR",
		Args:  cobra.ExactArgs(1),
	}
	ca := cmd.Flags().String("ca", "vxsec-ca", "directory of the CA (from `vxsec ca init`)")
	out := cmd.Flags().String("out", "", "directory to write the identity to (default: ./<HOST>)")
	addrs := cmd.Flags().StringSlice("addr", nil, "underlay address the host advertises (VXSEC_ADVERTISE_ADDR); repeat for several")
	validity := cmd.Flags().Duration("valid", identity.DefaultHostValidity, "how long the identity is valid")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var as []netip.Addr
		for _, a := range *addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return fmt.Errorf("--addr %q: not an IP address; accepted: the host's underlay IPv4 or IPv6 address", a)
			}
			as = append(as, ip)
		}
		if len(as) == 0 {
			return fmt.Errorf("--addr is required: the underlay address the host advertises (its tables are accepted only for it)")
		}
		dir := *out
		if dir == "" {
			dir = args[0]
		}
		cert, err := identity.Issue(*ca, dir, args[0], as, *validity)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "identity of %s (%v) written to %s, valid until %s\n", args[0], as, dir, cert.NotAfter.Format(time.RFC3339))
		return nil
	}
	return cmd
}

func caRevokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke HOST",
		Short: "revoke every identity issued to HOST (or the one with that serial, in hex): writes the CA's crl.pem; then `vxsec ca load-crl` it on any one host",
		Args:  cobra.ExactArgs(1),
	}
	ca := cmd.Flags().String("ca", "vxsec-ca", "directory of the CA (from `vxsec ca init`)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		_, serials, err := identity.Revoke(*ca, args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "revoked %s (serial %v); the list is %s. Load it on any one host: vxsec ca load-crl %s\n",
			args[0], serials, filepath.Join(*ca, identity.CRLFile), filepath.Join(*ca, identity.CRLFile))
		return nil
	}
	return cmd
}

func caLoadCRLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "load-crl FILE",
		Short: "give the local daemon the CA's revocation list: it drops revoked hosts and spreads the list to every host within seconds",
		Args:  cobra.ExactArgs(1),
	}
	sock := socketFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		raw, err := os.ReadFile(args[0])
		if err != nil {
			return err
		}
		var out json.RawMessage
		if err := daemonClient(cmd, *sock).Call(cmd.Context(), "VxSec.LoadCRL", plugin.LoadCRLRequest{CRL: raw}, &out); err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), string(out))
		return nil
	}
	return cmd
}
