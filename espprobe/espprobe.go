package espprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

// SPI is the probes' SPI. RFC 4303 reserves 1..255: no SA ever has it, so
// the receiver's kernel drops a probe (counted as XfrmInNoStates) after
// its firewall has seen it.
const SPI = 1

// Every is how often a host probes each peer: several probes fit in
// firewall.ESPSeenFor, so one lost probe changes nothing.
const Every = 5 * time.Second

// Payload is one probe: an ESP header (SPI, sequence number) and a tag
// that says what it is to whoever captures it.
func Payload(seq uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, SPI)
	b = binary.BigEndian.AppendUint32(b, seq)
	return append(b, "vxsec esp probe"...)
}

// Send sends one probe from local to each peer of its family, from a raw
// socket opened for the round and closed after it: open, it would be
// handed a copy of every ESP packet this host receives.
func Send(local netip.Addr, peers []netip.Addr, seq uint32) error {
	family := syscall.AF_INET
	if local.Is6() {
		family = syscall.AF_INET6
	}
	fd, err := syscall.Socket(family, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.IPPROTO_ESP)
	if err != nil {
		return fmt.Errorf("opening a raw ESP socket for probes: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, sockaddr(local)); err != nil {
		return fmt.Errorf("binding the ESP probe socket to %s: %w", local, err)
	}
	p := Payload(seq)
	var errs []error
	for _, peer := range peers {
		if peer.Is4() != local.Is4() || peer == local {
			continue
		}
		if err := syscall.Sendto(fd, p, 0, sockaddr(peer)); err != nil {
			errs = append(errs, fmt.Errorf("probe to %s: %w", peer, err))
		}
	}
	return errors.Join(errs...)
}

func sockaddr(a netip.Addr) syscall.Sockaddr {
	if a.Is4() {
		return &syscall.SockaddrInet4{Addr: a.As4()}
	}
	return &syscall.SockaddrInet6{Addr: a.As16()}
}
