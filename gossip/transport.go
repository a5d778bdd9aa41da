package gossip

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/vxsec/vxsec/internal/limit"
)

// The gossip port serves strangers nothing before they authenticate, and
// bounds what they cost meanwhile. memberlist's own transport reads every
// UDP packet into a fresh 64 KiB buffer and hands memberlist every stream,
// which then buffers up to 20 MiB before it decrypts anything and logs an
// error for every bad packet. This transport instead checks what arrives
// against the keys memberlist decrypts with, and hands memberlist only what
// authenticated: a stranger's junk costs a bounded read and a counter.
//
// Connections are told apart by their source: a member's (an address serf
// knows) and a stranger's wait under separate limits, so strangers queuing
// to authenticate never crowd out the members' probes, state exchanges and
// table pulls. A TCP source address cannot be forged off the path.

// memberlist's stream framing (net.go, security.go, v0.7.0): an encrypted
// stream opens with encryptMsg, the length of what follows (4 bytes, big
// endian), then the encryption version (0 or 1), a 12-byte nonce and the
// AES-GCM ciphertext, authenticated together with those first 5 bytes. A
// packet is the version, nonce and ciphertext alone.
const (
	encryptMsg     = 10
	gcmNonce       = 12
	gcmTag         = 16
	minEncrypted   = 1 + gcmNonce + gcmTag      // version 1, empty message
	minEncryptedV0 = 1 + gcmNonce + 16 + gcmTag // version 0 pads a block
)

// Bounds of the gossip port.
const (
	// preauthTimeout bounds the whole time a stream may take to
	// authenticate: a state exchange's first message, or a pull's proof.
	preauthTimeout = 5 * time.Second
	// maxStreamFrame bounds the encrypted message a stream may open with.
	// The largest is serf's state exchange (push/pull), which holds every
	// member: memberlist's node state with vxsec's tags and serf's status
	// times. Measured on 60 members: 7.3 KB, 121 bytes a member (IPv6
	// names add about 25). For the 1024 hosts vxsec is sized for
	// (designHosts) that is about 150 KB; 1 MiB leaves room for seven
	// times that. memberlist's own bound is 20 MiB.
	maxStreamFrame = 1 << 20
	// udpBuffer is the socket's receive buffer, as memberlist sets it.
	udpBuffer = 2 << 20
	// maxPacket is the largest packet read whole. memberlist never sends
	// more than its UDPBufferSize (1400 bytes, encryption included);
	// 9216 takes a jumbo frame. A longer one is refused.
	maxPacket = 9216
	// readBatch is how many packets one read may return.
	readBatch = 32
)

// strangerLimits bound connections from addresses serf does not know: a
// host joining (one state exchange, then a member), or anyone else. What
// they may buffer before authenticating is 4 MiB in all.
var strangerLimits = limit.GateLimits{
	Pending: 32, PendingPerSource: 4,
	Bytes: 4 << 20,
	Rate:  50, Burst: 100,
	SourceRate: 5, SourceBurst: 10,
	Sources: 1024,
}

// memberLimits bound connections from members. A member opens a handful at
// once (a state exchange, a probe falling back to TCP, one table pull), and
// never needs a rate limit; the bounds only keep a member gone wrong from
// holding everything.
var memberLimits = limit.GateLimits{
	Pending: 256, PendingPerSource: 16,
	Bytes: 32 << 20,
}

// strangerPackets bounds the UDP packets a second from strangers that are
// checked against the keys at all; the rest are dropped unread. Members
// never send from an address serf does not know, save a host in the
// moment it joins.
const (
	strangerPacketRate  = 1000
	strangerPacketBurst = 2000
)

// transport is memberlist's network transport: UDP packets and TCP
// streams on one port, table pulls taken off the streams.
type transport struct {
	tcp     *net.TCPListener
	udp     *net.UDPConn
	packets chan *memberlist.Packet
	streams chan net.Conn
	// deltas are the table deltas that arrived (deltaPacket), opened.
	deltas chan []byte
	// pull serves a table pull, its magic byte read; it releases the
	// ticket once the client proved itself.
	pull func(net.Conn, *limit.Ticket)
	// pullV1 serves a version 1 pull to a member of the previous release.
	pullV1 func(net.Conn, *limit.Ticket)
	// auth is nil in an open cluster (no secret): nothing can be told
	// apart, so only the counts and sizes are bounded.
	auth *authenticator
	// preauth bounds the time a stream may take to authenticate
	// (preauthTimeout, save in tests).
	preauth   time.Duration
	members   atomic.Pointer[map[netip.Addr]bool]
	strangers *limit.Gate
	known     *limit.Gate
	// packetBucket is used by the UDP reader alone.
	packetBucket limit.Bucket
	stats        *counters
	// log budgets the lines strangers cause; slog writes those allowed.
	log  *limit.Logger
	slog *slog.Logger

	// active holds the connections being authenticated or served a
	// table, closed at shutdown rather than waited for.
	mu     sync.Mutex
	active map[net.Conn]struct{}

	// open is closed by release; until then nothing that arrived is
	// handed to memberlist.
	open chan struct{}
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newTransport(addr netip.Addr, port int, pull, pullV1 func(net.Conn, *limit.Ticket), auth *authenticator, stats *counters, log *limit.Logger, sl *slog.Logger, preauth time.Duration) (*transport, error) {
	tcp, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
	if err != nil {
		tcp.Close()
		return nil, err
	}
	if err := udp.SetReadBuffer(udpBuffer); err != nil {
		log.Log(slog.LevelWarn, "udp buffer", "could not enlarge the gossip port's receive buffer", "err", err)
	}
	t := &transport{
		tcp: tcp, udp: udp,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn),
		deltas: make(chan []byte, deltaQueue),
		pull:   pull, pullV1: pullV1, auth: auth, preauth: preauth,
		strangers: limit.NewGate(strangerLimits), known: limit.NewGate(memberLimits),
		packetBucket: limit.Bucket{Rate: strangerPacketRate, Burst: strangerPacketBurst},
		stats:        stats, log: log, slog: sl,
		active: map[net.Conn]struct{}{},
		open:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	t.wg.Add(2)
	go t.acceptLoop()
	go t.readLoop()
	return t, nil
}

// release lets what arrives through to memberlist; Start calls it once,
// when serf is ready to handle it. Peers' queries reach serf's handlers
// only through here (a stream or a packet handed to memberlist), so what
// Start did before release happens before any handler runs.
func (t *transport) release() { close(t.open) }

// released waits for release, or reports false if the transport shut down
// first.
func (t *transport) released() bool {
	select {
	case <-t.open:
		return true
	case <-t.done:
		return false
	}
}

// setMembers replaces the addresses whose connections count as members'.
func (t *transport) setMembers(addrs []netip.Addr) {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = true
	}
	t.members.Store(&m)
}

func (t *transport) isMember(a netip.Addr) bool {
	m := t.members.Load()
	return m != nil && (*m)[a.Unmap()]
}

// track adds conn to the active ones, unless the transport is shutting
// down.
func (t *transport) track(conn net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.active == nil {
		return false
	}
	t.active[conn] = struct{}{}
	return true
}

func (t *transport) untrack(conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.active, conn)
}

func (t *transport) closed() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// refuse counts a refusal and logs it within the log budget; reasons an
// honest peer also causes (a closed connection) log at debug level. The
// line is built only when the budget allows it: at 50,000 junk packets a
// second, building it would cost more than refusing the packet.
func (t *transport) refuse(reason string, from netip.AddrPort, err error) {
	t.stats.add(reason)
	level := slog.LevelWarn
	if reason == "closed" {
		level = slog.LevelDebug
	}
	if t.log.Allow(level, reason) {
		t.slog.Log(context.Background(), level, "gossip port refused a peer", "reason", reason, "peer", from, "err", err)
	}
}

func (t *transport) acceptLoop() {
	defer t.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.closed() {
				return
			}
			// Out of descriptors, most likely: wait rather than spin.
			t.log.Log(slog.LevelError, "gossip accept", "accepting on the gossip port", "err", err)
			select {
			case <-t.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		from := conn.RemoteAddr().(*net.TCPAddr).AddrPort()
		gate := t.strangers
		if t.isMember(from.Addr()) {
			gate = t.known
		}
		ticket, err := gate.Admit(from.Addr())
		if err != nil {
			// A reset, not a close: no time-wait state kept for a stranger.
			conn.SetLinger(0)
			conn.Close()
			t.refuse(limit.Reason(err), from, err)
			continue
		}
		if !t.track(conn) {
			conn.Close()
			ticket.Release()
			return
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer t.untrack(conn)
			defer ticket.Release()
			t.handle(conn, from, ticket)
		}()
	}
}

// handle authenticates one stream, then hands it to whoever it is for.
func (t *transport) handle(conn *net.TCPConn, from netip.AddrPort, ticket *limit.Ticket) {
	conn.SetDeadline(time.Now().Add(t.preauth))
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		conn.Close()
		t.refuse(readReason(err), from, err)
		return
	}
	switch {
	case first[0] == pullMagicV2:
		t.pull(conn, ticket)
	case first[0] == pullMagicV1 && t.isMember(from.Addr()):
		t.pullV1(conn, ticket)
	case first[0] == pullMagicV1:
		conn.Close()
		t.refuse("pull-v1", from, errors.New("table pull of version 1 from an address that is no member's"))
	case t.auth == nil:
		// An open cluster: nothing to check. memberlist reads one message
		// a stream; bound it as an encrypted one is.
		ticket.Release()
		conn.SetDeadline(time.Time{})
		t.handoff(&streamConn{Conn: conn, r: io.MultiReader(bytes.NewReader(first[:]), io.LimitReader(conn, maxStreamFrame))})
	case first[0] != encryptMsg:
		conn.Close()
		t.refuse("not-encrypted", from, fmt.Errorf("stream opens with message type %d, not an encrypted message", first[0]))
	default:
		frame, err := t.readFrame(conn, ticket)
		if err != nil {
			conn.Close()
			t.refuse(frameReason(err), from, err)
			return
		}
		ticket.Release()
		conn.SetDeadline(time.Time{})
		t.handoff(&streamConn{Conn: conn, r: io.MultiReader(bytes.NewReader(frame), conn)})
	}
}

var (
	errEmptyPacket  = errors.New("empty packet")
	errPacketRate   = errors.New("packets from strangers arrive faster than allowed")
	errTruncated    = fmt.Errorf("packet longer than %d bytes", maxPacket)
	errFrameSize    = errors.New("encrypted message length out of bounds")
	errNotAuthentic = errors.New("message did not authenticate under any key of this cluster")
)

// readFrame reads the encrypted message a stream opens with (its type
// byte read) and checks it under the cluster's keys. It returns the
// message as memberlist expects to read it, type byte included.
func (t *transport) readFrame(conn net.Conn, ticket *limit.Ticket) ([]byte, error) {
	head := make([]byte, 5)
	head[0] = encryptMsg
	if _, err := io.ReadFull(conn, head[1:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[1:])
	if n < minEncrypted || n > maxStreamFrame {
		return nil, fmt.Errorf("%w: %d bytes, want %d to %d", errFrameSize, n, minEncrypted, maxStreamFrame)
	}
	// The message, and its plaintext while it is checked.
	if err := ticket.Reserve(2 * int64(n)); err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, 5+min(n, 4096)))
	buf.Write(head)
	// Grown as bytes arrive: a peer claiming a large message and sending
	// it slowly holds its reservation, not memory.
	if _, err := io.CopyN(buf, conn, int64(n)); err != nil {
		return nil, err
	}
	frame := buf.Bytes()
	if !t.auth.open(frame[5:], frame[:5], nil) {
		return nil, errNotAuthentic
	}
	return frame, nil
}

func (t *transport) handoff(c net.Conn) {
	if !t.released() {
		c.Close()
		return
	}
	select {
	case t.streams <- c:
		t.stats.accept("stream")
	case <-t.done:
		c.Close()
	}
}

// readLoop reads UDP packets in batches (one system call for as many as
// are queued, which is what keeps the reader ahead of a flood on a busy
// host: a packet the kernel drops for a full buffer may be a member's
// probe) and passes memberlist copies of those that authenticate.
func (t *transport) readLoop() {
	defer t.wg.Done()
	// The kernel holds what arrives meanwhile (udpBuffer).
	if !t.released() {
		return
	}
	var r batchReader = ipv4.NewPacketConn(t.udp)
	if t.udp.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Is6() {
		r = ipv6.NewPacketConn(t.udp)
	}
	msgs := make([]ipv4.Message, readBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, maxPacket)}
	}
	scratch := make([]byte, 0, maxPacket)
	for {
		n, err := r.ReadBatch(msgs, 0)
		ts := time.Now()
		if err != nil {
			if t.closed() {
				return
			}
			t.log.Log(slog.LevelError, "gossip read", "reading from the gossip port", "err", err)
			select {
			case <-t.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		for _, m := range msgs[:n] {
			ua, _ := m.Addr.(*net.UDPAddr)
			if ua == nil {
				continue
			}
			from := ua.AddrPort()
			p := m.Buffers[0][:m.N]
			if len(p) > 0 && p[0] == deltaPacket && m.Flags&unix.MSG_TRUNC == 0 {
				t.takeDelta(p[1:], from, ts, scratch)
				continue
			}
			reason, err := t.checkPacket(p, from.Addr(), ts, scratch)
			if reason == "" && m.Flags&unix.MSG_TRUNC != 0 {
				reason, err = "packet-malformed", errTruncated
			}
			if reason != "" {
				t.refuse(reason, from, err)
				continue
			}
			pkt := &memberlist.Packet{Buf: bytes.Clone(p), From: ua, Timestamp: ts}
			select {
			case t.packets <- pkt:
				t.stats.accept("packet")
			case <-t.done:
				return
			}
		}
	}
}

// batchReader reads many datagrams at once (ipv4 and ipv6 PacketConn).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// A table delta (announce.Delta) travels in a UDP packet of its own, sent
// by its author to each member: deltaPacket, then (with a secret) the
// delta sealed like memberlist's packets (version 1, nonce, AES-GCM under
// the primary gossip key) but with deltaAAD, so that neither is ever taken
// for the other. memberlist's packets open with a version byte (0 or 1)
// with a secret, or a message type below deltaPacket without.
const (
	deltaPacket = 0xd7
	deltaAAD    = "vxsec table delta v1"
	// deltaQueue bounds the deltas waiting for the cluster; more are
	// dropped (their tables are pulled).
	deltaQueue = 1024
)

// sealDelta is the packet that carries wire, sealed under key (nil: an
// open cluster).
func sealDelta(key, wire []byte) ([]byte, error) {
	out := []byte{deltaPacket}
	if key == nil {
		return append(out, wire...), nil
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out = append(out, 1)
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out = append(out, nonce...)
	return g.Seal(out, nonce, wire, []byte(deltaAAD)), nil
}

// sendDelta sends wire, sealed under key, to each address.
func (t *transport) sendDelta(key, wire []byte, to []netip.AddrPort) error {
	p, err := sealDelta(key, wire)
	if err != nil {
		return err
	}
	var first error
	for _, ap := range to {
		if _, err := t.udp.WriteToUDPAddrPort(p, ap); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// takeDelta opens a delta packet (its first byte taken off) and queues the
// delta for the cluster, or refuses it.
func (t *transport) takeDelta(p []byte, from netip.AddrPort, now time.Time, scratch []byte) {
	if t.auth != nil {
		if !t.isMember(from.Addr()) && !t.packetBucket.Take(now) {
			t.refuse("packet-rate", from, errPacketRate)
			return
		}
		plain, ok := t.auth.openPlain(p, []byte(deltaAAD), scratch)
		if !ok {
			t.refuse("packet-unauthentic", from, errNotAuthentic)
			return
		}
		p = plain
	}
	select {
	case t.deltas <- bytes.Clone(p):
	default:
		t.stats.add("delta-dropped")
	}
}

// checkPacket says why a packet is refused, or "" when it authenticated.
func (t *transport) checkPacket(p []byte, from netip.Addr, now time.Time, scratch []byte) (string, error) {
	if len(p) == 0 {
		return "packet-malformed", errEmptyPacket
	}
	if t.auth == nil {
		return "", nil
	}
	if !t.isMember(from) && !t.packetBucket.Take(now) {
		return "packet-rate", errPacketRate
	}
	if !t.auth.open(p, nil, scratch) {
		return "packet-unauthentic", errNotAuthentic
	}
	return "", nil
}

func readReason(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "closed"
}

func frameReason(err error) string {
	switch {
	case errors.Is(err, errFrameSize):
		return "frame-size"
	case errors.Is(err, errNotAuthentic):
		return "unauthentic"
	case limit.Reason(err) != "":
		return limit.Reason(err)
	}
	return readReason(err)
}

// FinalAdvertiseAddr: vxsec always gives the address.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, 0, fmt.Errorf("advertise address %q: %w", ip, err)
	}
	return net.IP(a.Unmap().AsSlice()), port, nil
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	ap, err := resolve(a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteToUDPAddrPort(b, ap)
	return time.Now(), err
}

func resolve(addr string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap, nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return ua.AddrPort(), nil
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := t.dialer()
	d.Timeout = timeout
	return d.Dial("tcp", a.Addr)
}

// dialer connects from the address this host advertises, as its packets
// do, so that its peers count its streams as a member's whatever route
// the kernel would pick a source address for.
func (t *transport) dialer() *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: t.tcp.Addr().(*net.TCPAddr).IP}}
}

// StreamCh is what memberlist reads: streams that authenticated.
func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown closes the port and waits for every goroutine of the
// transport; memberlist and the Cluster both call it.
func (t *transport) Shutdown() error {
	t.once.Do(func() {
		close(t.done)
		t.tcp.Close()
		t.udp.Close()
		t.mu.Lock()
		for c := range t.active {
			c.Close()
		}
		t.active = nil
		t.mu.Unlock()
	})
	t.wg.Wait()
	return nil
}

// streamConn reads what was read ahead first.
type streamConn struct {
	net.Conn
	r io.Reader
}

func (c *streamConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// authenticator checks memberlist's encrypted messages under the keys
// memberlist decrypts with; the Cluster sets them whenever the keyring
// changes.
type authenticator struct {
	aeads atomic.Pointer[[]cipher.AEAD]
}

func newAuthenticator(keys [][]byte) (*authenticator, error) {
	a := &authenticator{}
	return a, a.setKeys(keys)
}

func (a *authenticator) setKeys(keys [][]byte) error {
	aeads := make([]cipher.AEAD, 0, len(keys))
	for _, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return fmt.Errorf("gossip key: %w", err)
		}
		g, err := cipher.NewGCM(block)
		if err != nil {
			return fmt.Errorf("gossip key: %w", err)
		}
		aeads = append(aeads, g)
	}
	a.aeads.Store(&aeads)
	return nil
}

// open reports whether msg (version, nonce, ciphertext) authenticates
// with aad under one of the keys. scratch, if large enough, holds the
// plaintext, which is thrown away: memberlist decrypts again.
func (a *authenticator) open(msg, aad, scratch []byte) bool {
	_, ok := a.openPlain(msg, aad, scratch)
	return ok
}

// openPlain is open, returning the plaintext (in scratch when it is
// large enough).
func (a *authenticator) openPlain(msg, aad, scratch []byte) ([]byte, bool) {
	if len(msg) < minEncrypted || msg[0] > 1 || msg[0] == 0 && len(msg) < minEncryptedV0 {
		return nil, false
	}
	nonce, ct := msg[1:1+gcmNonce], msg[1+gcmNonce:]
	for _, g := range *a.aeads.Load() {
		if plain, err := g.Open(scratch[:0], nonce, ct, aad); err == nil {
			return plain, true
		}
	}
	return nil, false
}

// counters count what the gossip port accepted and refused, by reason.
type counters struct {
	mu       sync.Mutex
	accepted map[string]uint64
	refused  map[string]uint64
}

func newCounters() *counters {
	return &counters{accepted: map[string]uint64{}, refused: map[string]uint64{}}
}

func (c *counters) add(reason string) {
	c.mu.Lock()
	c.refused[reason]++
	c.mu.Unlock()
}

func (c *counters) accept(what string) {
	c.mu.Lock()
	c.accepted[what]++
	c.mu.Unlock()
}

// Stats is what the gossip port let through and refused since start.
type Stats struct {
	// Accepted counts by kind: "stream" (to memberlist), "pull" (tables
	// served), "packet", "delta" (members' tables installed from a
	// delta), "delta-early" (deltas kept for the version before them),
	// "delta-run" (runs of deltas installed at once), "delta-sent",
	// "delta-behind" (a wait for a delta made longer: deltas were queued).
	Accepted map[string]uint64 `json:"Accepted"`
	// Refused counts by reason: "busy", "source-busy", "rate",
	// "source-rate", "sources", "memory" (the limits of connections
	// waiting to authenticate), "timeout", "closed", "frame-size",
	// "not-encrypted", "unauthentic", "pull-v1", "pull-proof", "pull-identity" (a pull without the host identity the cluster requires),
	// "packet-rate", "packet-unauthentic", "packet-malformed",
	// "table-limits" for pulled tables over the member bounds, and for
	// deltas "delta-gap" (not from the version held: pulled instead),
	// "delta-identity", "delta-mismatch", "delta-malformed" and
	// "delta-dropped" (the queue to the cluster full).
	Refused map[string]uint64 `json:"Refused"`
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Accepted: map[string]uint64{}, Refused: map[string]uint64{}}
	for k, v := range c.accepted {
		s.Accepted[k] = v
	}
	for k, v := range c.refused {
		s.Refused[k] = v
	}
	return s
}
