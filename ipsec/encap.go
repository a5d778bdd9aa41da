package ipsec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// EncapSocket is the UDP socket ESP in UDP (RFC 3948) arrives on. Marked
// UDP_ENCAP_ESPINUDP, it hands every datagram that starts with a non-zero
// SPI to xfrm, which decrypts it with the SA of that SPI as native ESP
// would be, provided the SA was made for ESP in UDP. What reaches the
// socket itself is only what is not ESP: NAT keepalives (one 0xff byte)
// and IKE's non-ESP marker, which vxsec never uses; they are read and
// dropped so the buffer never fills.
type EncapSocket struct {
	conn *net.UDPConn
	done chan struct{}
}

// OpenEncapSocket binds the socket to local's port.
func OpenEncapSocket(local netip.Addr, port uint16) (*EncapSocket, error) {
	var serr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_ENCAP, unix.UDP_ENCAP_ESPINUDP)
		}); err != nil {
			return err
		}
		return serr
	}}
	network := "udp4"
	if local.Is6() {
		network = "udp6"
	}
	pc, err := lc.ListenPacket(context.Background(), network, netip.AddrPortFrom(local, port).String())
	if err != nil {
		return nil, fmt.Errorf("opening the ESP-in-UDP socket on %s port %d (VXSEC_ESP_UDP_PORT): %w", local, port, err)
	}
	s := &EncapSocket{conn: pc.(*net.UDPConn), done: make(chan struct{})}
	go s.drain()
	return s, nil
}

func (s *EncapSocket) drain() {
	defer close(s.done)
	buf := make([]byte, 2048)
	for {
		if _, _, err := s.conn.ReadFromUDPAddrPort(buf); err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// Close closes the socket and waits for its reader.
func (s *EncapSocket) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}

// Keepalive sends the NAT keepalive of RFC 3948 (one 0xff byte) to a
// peer's ESP-in-UDP port. It keeps the mapping a NAT in front of this host
// made for the socket's port open while no ESP flows; the peer's kernel
// drops it (xfrm's UDP encap receive: a one-byte 0xff datagram is a
// keepalive).
func (s *EncapSocket) Keepalive(to netip.AddrPort) error {
	if _, err := s.conn.WriteToUDPAddrPort([]byte{0xff}, to); err != nil {
		return fmt.Errorf("sending a NAT keepalive to %s: %w", to, err)
	}
	return nil
}
