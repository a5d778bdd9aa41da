package lab

import (
	"context"
	"fmt"
	"time"
)

// WaitKeyed waits until every pair of the running hosts among hosts sends
// with both hosts' newest epochs and no host holds an older one: the end of
// a rotation or a re-key, as the daemons report it.
func WaitKeyed(ctx context.Context, hosts []*Host, timeout time.Duration) error {
	return WaitForEvery(ctx, timeout, pollEvery, keyed(ctx, hosts))
}

// WaitKeyedEvery is WaitKeyed asking the daemons every poll: a benchmark
// whose emulated CPU also carries the traffic it measures asks seldom,
// since each status costs the daemon work.
func WaitKeyedEvery(ctx context.Context, hosts []*Host, timeout, poll time.Duration) error {
	return WaitForEvery(ctx, timeout, poll, keyed(ctx, hosts))
}

func keyed(ctx context.Context, hosts []*Host) func() error {
	return func() error {
		newest := map[*Host]uint64{}
		sts := map[*Host]Status{}
		var up []*Host
		for _, h := range hosts {
			if !h.Running() {
				continue
			}
			st, err := h.BriefStatus(ctx)
			if err != nil {
				return err
			}
			if st.IPsec == nil || !st.IPsec.Active || len(st.IPsec.Epochs) != 1 {
				return fmt.Errorf("%s: IPsec %+v, want one epoch", h.Name, st.IPsec)
			}
			newest[h], sts[h] = st.IPsec.Epochs[0], st
			up = append(up, h)
		}
		for _, h := range up {
			for _, o := range up {
				if o == h {
					continue
				}
				p, ok := sts[h].Peer(o.Addr.String())
				if !ok || p.Epoch != newest[h] || p.PeerEpoch != newest[o] || p.SPI == 0 {
					return fmt.Errorf("%s sends to %s with %+v, want epochs %d/%d", h.Name, o.Name, p, newest[h], newest[o])
				}
			}
		}
		return nil
	}
}

// WaitEncap waits until every running host sends to every other with the
// encapsulation want ("esp" or "udp", ipsec.PeerStatus.Encap), on keys of
// the newest epochs (WaitKeyed).
func WaitEncap(ctx context.Context, hosts []*Host, want string, timeout time.Duration) error {
	return WaitFor(ctx, timeout, func() error {
		for _, h := range hosts {
			if !h.Running() {
				continue
			}
			st, err := h.BriefStatus(ctx)
			if err != nil {
				return err
			}
			for _, o := range hosts {
				if o == h || !o.Running() {
					continue
				}
				if p, ok := st.Peer(o.Addr.String()); !ok || p.Encap != want {
					return fmt.Errorf("%s sends to %s in %q (%s), want %q", h.Name, o.Name, p.Encap, p.EncapWhy, want)
				}
			}
		}
		return WaitKeyed(ctx, hosts, time.Second)
	})
}
