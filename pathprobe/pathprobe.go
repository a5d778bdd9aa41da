package pathprobe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Mark is the socket mark (SO_MARK) probes leave with. The value is an
// unusual whole word, so that no policy routing rule of another user's
// (kube-proxy's 0x4000, Calico's, Cilium's, Tailscale's masks) selects it.
const Mark = 0x76787370

// Every is how often a member probes each peer: several rounds fit in the
// receiver's record (firewall.PathSeenFor), so one lost probe changes
// nothing.
const Every = 5 * time.Second

// The probes' magic, bytes 8..11 of the UDP payload, after a VXLAN header
// with VNI 0.
const (
	MagicSmall uint32 = 0x76787073 // "vxps"
	MagicFull  uint32 = 0x76787066 // "vxpf"
)

// HeaderLen is what identifies a probe: the VXLAN header (flags 0x08,
// VNI 0) and the magic.
const HeaderLen = 12

// smallLen is the small probe's UDP payload: it fits any path.
const smallLen = 32

// VXLANHeader is the 8 bytes every probe starts with: VXLAN's "VNI valid"
// flag and VNI 0.
func VXLANHeader() []byte { return []byte{0x08, 0, 0, 0, 0, 0, 0, 0} }

// Payload is a probe's UDP payload of size bytes (at least HeaderLen):
// the VXLAN header, the magic and zeros.
func Payload(magic uint32, size int) []byte {
	b := make([]byte, max(size, HeaderLen))
	copy(b, VXLANHeader())
	binary.BigEndian.PutUint32(b[8:], magic)
	return b
}

// FullSize is the UDP payload of the full-size probe: the outer packet is
// then exactly the underlay MTU vxsec assumes for the path (vxlan.Overhead
// and driver.ContainerMTU derive the containers' MTU from the same).
func FullSize(underlayMTU int, ipv6 bool) int {
	ip := 20
	if ipv6 {
		ip = 40
	}
	return underlayMTU - ip - 8
}

// Config is what Run probes with.
type Config struct {
	// Local is the address probes leave from: the host's own underlay
	// address (vxlan.Underlay.Local; behind NAT not the advertised one).
	Local netip.Addr
	// Self is the host's advertise address, never probed.
	Self netip.Addr
	// Port is the data port of every member.
	Port int
	// MTU is the underlay MTU the driver assumes.
	MTU int
	// Peers returns the members to probe now (alive ones).
	Peers func() []netip.Addr
	Log   *slog.Logger
}

// Run probes every Every until ctx ends.
func Run(ctx context.Context, cfg Config) {
	t := time.NewTicker(Every)
	defer t.Stop()
	for round := 0; ; round++ {
		if err := Send(cfg.Local, cfg.Self, cfg.Port, cfg.MTU, cfg.Peers()); err != nil && round%60 == 0 {
			// Every 60th round: a blocked path is the doctor's to name,
			// not the log's to repeat every 5 s.
			cfg.Log.Warn("sending path probes (logged every 60th round)", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Send sends one small and one full-size probe to each peer of local's
// family but self, from a marked socket opened for the round.
func Send(local, self netip.Addr, port, mtu int, peers []netip.Addr) error {
	family := unix.AF_INET
	if local.Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return fmt.Errorf("opening the path probe socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, Mark); err != nil {
		return fmt.Errorf("marking the path probe socket (needs CAP_NET_ADMIN or CAP_NET_RAW): %w", err)
	}
	// DF set, whatever the kernel learnt of the path's MTU: the probe
	// tests the path, not the cache.
	if local.Is4() {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_PROBE)
	} else {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_PROBE)
		if err == nil {
			err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, 1)
		}
	}
	if err != nil {
		return fmt.Errorf("setting DF on the path probe socket: %w", err)
	}
	if err := unix.Bind(fd, sockaddr(local, 0)); err != nil {
		return fmt.Errorf("binding the path probe socket to %s: %w", local, err)
	}
	small := Payload(MagicSmall, smallLen)
	full := Payload(MagicFull, FullSize(mtu, local.Is6()))
	var errs []error
	for _, peer := range peers {
		if peer.Is4() != local.Is4() || peer == self || peer == local {
			continue
		}
		to := sockaddr(peer, port)
		for _, p := range [][]byte{small, full} {
			if err := unix.Sendto(fd, p, 0, to); err != nil {
				errs = append(errs, fmt.Errorf("probe of %d bytes to %s: %w", len(p), peer, err))
			}
		}
	}
	return errors.Join(errs...)
}

func sockaddr(a netip.Addr, port int) unix.Sockaddr {
	if a.Is4() {
		return &unix.SockaddrInet4{Addr: a.As4(), Port: port}
	}
	return &unix.SockaddrInet6{Addr: a.As16(), Port: port}
}
