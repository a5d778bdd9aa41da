package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/vxsec/vxsec/identity"
)

// renewCheckEvery is how often the identity directory is looked at for a
// renewed certificate: two stat calls.
const renewCheckEvery = 10 * time.Second

// renewWarnBefore: a certificate that ends within this is logged as due
// for renewal, once a day.
const renewWarnBefore = 14 * 24 * time.Hour

// watchIdentity renews the running identity when `vxsec ca issue` has
// written a new certificate and key into the host's directory: the next
// table is signed with them (resign), without a restart. A directory
// caught half written, or holding a certificate this host cannot use
// (another host's, another address's, revoked), is logged and the running
// identity kept.
func watchIdentity(ctx context.Context, dir string, addr netip.Addr, self *identity.Identity, resign func(), log *slog.Logger) {
	stamp := func() string {
		var s string
		for _, f := range []string{identity.CertFile, identity.KeyFile} {
			if fi, err := os.Stat(filepath.Join(dir, f)); err == nil {
				s += fmt.Sprintf("%s %d %d;", fi.Name(), fi.ModTime().UnixNano(), fi.Size())
			}
		}
		return s
	}
	seen, warned := stamp(), time.Time{}
	t := time.NewTicker(renewCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if left := time.Until(self.Expires()); left < renewWarnBefore && time.Since(warned) > 24*time.Hour {
			warned = time.Now()
			log.Warn("the host identity is due for renewal: issue a new one into its directory (`vxsec ca issue --out DIR`); "+
				"the daemon takes it without a restart", "expires", self.Expires(), "left", left.Round(time.Minute), "dir", dir)
		}
		now := stamp()
		if now == seen {
			continue
		}
		next, _, err := identity.Load(dir, addr)
		if err == nil {
			err = self.Renew(next)
		}
		seen = now
		if err != nil {
			// A half-written pair is tried again when its second file
			// lands (the stamp changes).
			log.Error("a new host identity in the directory was not taken; the running one stays", "dir", dir, "err", err)
			continue
		}
		log.Info("host identity renewed: tables are signed with the new certificate", "expires", self.Expires(), "serial", hex.EncodeToString(self.Serial().Bytes()))
		resign()
	}
}
