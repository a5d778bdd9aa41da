package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/vxsec/vxsec/lab"
)

// twin is a hand-built VXLAN between two lab hosts, made with ip(8) alone,
// as an operator would make it: the baseline vxsec's data path is measured
// against.
type twin struct {
	vni, port int
	mtu       string
	// esp, when set, carries the twin's VXLAN in ESP transport mode
	// between the hosts: SAs and policies made by hand with ip xfrm, with
	// the algorithm vxsec uses (rfc4106(gcm(aes)), a 256-bit key, the full
	// ICV, ESN and a replay window of 128).
	esp bool
	// ends are the twin's two container namespaces and addresses.
	ends [2]twinEnd
}

type twinEnd struct {
	h      *lab.Host
	ns, ip string
	mac    string
}

// handBuiltReqid and handBuiltPriority mark the twin's SAs and policies:
// outside vxsec's ranges (ipsec.IsOwnReqid, ipsec.PeerPriority), so the
// daemons leave them alone, and selecting only the twin's UDP port.
const (
	handBuiltReqid    = 0x1234
	handBuiltPriority = 100
)

// build makes the twin; the returned function removes its namespaces.
func (t *twin) build(ctx context.Context) (func(), error) {
	cleanup := func() {
		for _, b := range t.ends {
			sh(context.Background(), "ip", "netns", "del", b.ns)
		}
	}
	var keys [2]string // one per direction: ends[i] sends with keys[i]
	var spis = [2]string{"0x7e570001", "0x7e570002"}
	for i := range keys {
		k := make([]byte, 36) // a 256-bit key and the 4-byte salt
		rand.Read(k)
		keys[i] = "0x" + hex.EncodeToString(k)
	}
	for i, b := range t.ends {
		peer := t.ends[1-i]
		steps := [][]string{
			{"ip", "-n", b.h.NS, "link", "add", "hbx", "mtu", t.mtu, "type", "vxlan", "id", fmt.Sprint(t.vni), "dstport", fmt.Sprint(t.port),
				"local", b.h.Addr.String(), "nolearning", "proxy"},
			{"ip", "-n", b.h.NS, "link", "set", "hbx", "addrgenmode", "none"},
			{"ip", "-n", b.h.NS, "link", "set", "hbx", "up"},
			{"bridge", "-n", b.h.NS, "fdb", "append", peer.mac, "dev", "hbx", "dst", peer.h.Addr.String(), "self", "permanent"},
			{"ip", "-n", b.h.NS, "neigh", "replace", peer.ip, "lladdr", peer.mac, "dev", "hbx", "nud", "permanent"},
			{"ip", "netns", "add", b.ns},
			{"ip", "-n", b.h.NS, "link", "add", "hbm", "link", "hbx", "mtu", t.mtu, "address", b.mac, "type", "macvlan", "mode", "bridge"},
			{"ip", "-n", b.h.NS, "link", "set", "hbm", "netns", b.ns},
			{"ip", "-n", b.ns, "link", "set", "hbm", "name", "eth0"},
			{"ip", "-n", b.ns, "addr", "add", b.ip + "/24", "dev", "eth0"},
			{"ip", "-n", b.ns, "link", "set", "eth0", "up"},
			{"ip", "-n", b.ns, "link", "set", "lo", "up"},
		}
		if t.esp {
			local, remote := b.h.Addr.String(), peer.h.Addr.String()
			sa := func(src, dst, spi, key string) []string {
				return []string{"ip", "-n", b.h.NS, "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp", "spi", spi,
					"reqid", fmt.Sprint(handBuiltReqid), "mode", "transport", "replay-window", "128", "flag", "esn",
					"aead", "rfc4106(gcm(aes))", key, "128"}
			}
			policy := func(src, dst, dir string) []string {
				return []string{"ip", "-n", b.h.NS, "xfrm", "policy", "add", "src", src, "dst", dst, "proto", "udp", "dport", fmt.Sprint(t.port),
					"dir", dir, "priority", fmt.Sprint(handBuiltPriority),
					"tmpl", "src", src, "dst", dst, "proto", "esp", "reqid", fmt.Sprint(handBuiltReqid), "mode", "transport"}
			}
			steps = append(steps,
				sa(local, remote, spis[i], keys[i]),
				sa(remote, local, spis[1-i], keys[1-i]),
				policy(local, remote, "out"),
				policy(remote, local, "in"),
			)
		}
		for _, args := range steps {
			if _, err := sh(ctx, args...); err != nil {
				cleanup()
				return nil, err
			}
		}
	}
	if out, err := sh(ctx, "ip", "netns", "exec", t.ends[0].ns, "ping", "-c", "1", "-w", "5", t.ends[1].ip); err != nil {
		cleanup()
		return nil, fmt.Errorf("hand-built VXLAN does not work: %w\n%s", err, out)
	}
	return cleanup, nil
}

// pair is the twin's iperf3 pair, client on the first end.
func (t *twin) pair(name string) pair {
	return pair{name: name, client: t.ends[0].ns, server: t.ends[1].ns, serverIP: t.ends[1].ip}
}
