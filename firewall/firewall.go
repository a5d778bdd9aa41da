// Package firewall owns vxsec's nftables tables, through netlink, so the
// plugin image needs no iptables or nft binary.
//
// Drop is final in nftables whatever other tables say, so the tables are
// vxsec's own and never depend on rule order in anybody else's chains
// (the fault of CVE-2023-28840). They exist only while a vxsec network
// does, and are programmed before any VXLAN device exists.
package firewall

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of vxsec's tables, one per family it needs.
const TableName = "vxsec"

// OverlayIfPrefix is the prefix of every overlay device name in the host
// namespace; the host must accept nothing that arrives on one.
const OverlayIfPrefix = "vxsec-"

// nfARPIn is NF_ARP_IN: the ARP family numbers its hooks apart from inet.
const nfARPIn = 0

// State is the firewall vxsec wants.
type State struct {
	// Active is true while at least one vxsec network exists.
	Active bool
}

// Firewall programs the tables in the namespace it was created in.
type Firewall struct{}

// New returns a Firewall.
func New() *Firewall { return &Firewall{} }

var families = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyARP}

// Apply makes the kernel's tables what s says, in one atomic transaction:
// an existing table is replaced whole, so there is no moment without rules.
func (f *Firewall) Apply(s State) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	existing, err := f.tables(conn)
	if err != nil {
		return err
	}
	for _, fam := range families {
		if existing[fam] {
			conn.DelTable(&nftables.Table{Name: TableName, Family: fam})
		}
	}
	if s.Active {
		addGuard(conn)
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("programming nftables table %s: %w", TableName, err)
	}
	return nil
}

func (f *Firewall) tables(conn *nftables.Conn) (map[nftables.TableFamily]bool, error) {
	out := map[nftables.TableFamily]bool{}
	for _, fam := range families {
		ts, err := conn.ListTablesOfFamily(fam)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("listing nftables tables: %w", err)
		}
		for _, t := range ts {
			if t.Name == TableName {
				out[fam] = true
			}
		}
	}
	return out, nil
}

// Present reports which of vxsec's tables exist, for checks and tests.
func (f *Firewall) Present() (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening nftables: %w", err)
	}
	t, err := f.tables(conn)
	return len(t) > 0, err
}

// addGuard queues the tables that keep the host out of every overlay: it
// neither receives (IP, IPv6 or ARP) nor forwards anything on an overlay
// device. Containers talk to each other below the host's IP stack, so this
// costs them nothing.
func addGuard(conn *nftables.Conn) {
	inet := conn.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
	in := conn.AddChain(&nftables.Chain{
		Name: "input", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(-10),
	})
	conn.AddRule(&nftables.Rule{Table: inet, Chain: in, Exprs: dropOnIf(expr.MetaKeyIIFNAME)})
	fwd := conn.AddChain(&nftables.Chain{
		Name: "forward", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-10),
	})
	conn.AddRule(&nftables.Rule{Table: inet, Chain: fwd, Exprs: dropOnIf(expr.MetaKeyIIFNAME)})
	conn.AddRule(&nftables.Rule{Table: inet, Chain: fwd, Exprs: dropOnIf(expr.MetaKeyOIFNAME)})

	arp := conn.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyARP})
	arpIn := conn.AddChain(&nftables.Chain{
		Name: "input", Table: arp, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookRef(nfARPIn), Priority: nftables.ChainPriorityFilter,
	})
	conn.AddRule(&nftables.Rule{Table: arp, Chain: arpIn, Exprs: dropOnIf(expr.MetaKeyIIFNAME)})
}

// dropOnIf is `meta iifname|oifname "vxsec-*" counter drop`: comparing only
// the prefix's bytes is how nft spells a wildcard.
func dropOnIf(key expr.MetaKey) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(OverlayIfPrefix)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}
