package gossip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/limit"
	"github.com/vxsec/vxsec/internal/testutil"
)

// lineCounter is a slog handler that counts the lines it is given.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineCounter) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelInfo
}
func (l *lineCounter) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}
func (l *lineCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *lineCounter) WithGroup(string) slog.Handler      { return l }

func (l *lineCounter) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}

// closedAtOnce checks that the server closed conn (or reset it, having
// left what was sent unread) without sending a byte, within a second: a
// refusal is at once.
func closedAtOnce(t *testing.T, conn net.Conn) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	n, err := io.Copy(io.Discard, conn)
	if n != 0 || err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want the connection closed at once with nothing sent: read %d bytes, err %v", n, err)
	}
}

// refusedAtOnce checks that a stream from source is refused as it is
// accepted: reset, possibly before the dial returns.
func refusedAtOnce(t *testing.T, source, addr string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 2 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closedAtOnce(t, conn)
}

// TestAttackStrangerStreams: what a stranger sends on the gossip port's TCP
// listener is refused before memberlist sees it, by reason; members keep
// exchanging tables all along.
func TestAttackStrangerStreams(t *testing.T) {
	logs := &lineCounter{}
	// The held streams below wait out the pre-authentication deadline;
	// what the test does while they are held takes tens of milliseconds.
	const preauth = 1500 * time.Millisecond
	a, _, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.91"), Secret: secretA, Log: slog.New(logs), timing: timing{preauthTimeout: preauth}})
	addr := net.JoinHostPort("127.0.0.91", strconv.Itoa(portA))
	seed := []string{addr}
	b, recB, _ := startNode(t, "127.0.0.92", secretA, seed)
	testutil.Eventually(t, 10*time.Second, "A and B members", func() bool { return len(b.Members()) == 2 && len(a.Members()) == 2 })

	refused := func(reason string) uint64 { return a.Stats().Refused[reason] }
	const stranger = "127.0.0.99"

	// Junk: not an encrypted message.
	c := rawConn(t, stranger, addr)
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	closedAtOnce(t, c)
	// A length over the bound: refused before a byte of it is read.
	c = rawConn(t, stranger, addr)
	c.Write(binary.BigEndian.AppendUint32([]byte{encryptMsg}, 20<<20))
	closedAtOnce(t, c)
	// Within the bound but not under the cluster's keys.
	c = rawConn(t, stranger, addr)
	junk := make([]byte, 1000)
	rand.Read(junk)
	junk[0] = 1
	c.Write(append(binary.BigEndian.AppendUint32([]byte{encryptMsg}, uint32(len(junk))), junk...))
	closedAtOnce(t, c)
	testutil.Eventually(t, 10*time.Second, "refusals counted", func() bool {
		return refused("not-encrypted") == 1 && refused("frame-size") == 1 && refused("unauthentic") == 1
	})

	// Per source: four may wait at once; the fifth is refused at once.
	var held []net.Conn
	for range strangerLimits.PendingPerSource {
		c := rawConn(t, stranger, addr)
		c.Write([]byte{encryptMsg, 0}) // a trickle
		held = append(held, c)
	}
	testutil.Eventually(t, 10*time.Second, "four strangers' streams waiting", func() bool { n, _ := a.tr.strangers.Pending(); return n == 4 })
	refusedAtOnce(t, stranger, addr)
	testutil.Eventually(t, 10*time.Second, "source-busy counted", func() bool { return refused("source-busy") == 1 })

	// In total: 32 may wait, from any number of sources; then every
	// stranger is refused, but a member's pull still goes through.
	for i := 0; len(held) < strangerLimits.Pending; i++ {
		for range strangerLimits.PendingPerSource {
			if len(held) == strangerLimits.Pending {
				break
			}
			c := rawConn(t, fmt.Sprintf("127.0.1.%d", i+1), addr)
			c.Write([]byte{pullMagicV2})
			held = append(held, c)
		}
	}
	testutil.Eventually(t, 10*time.Second, "32 strangers' streams waiting", func() bool { n, _ := a.tr.strangers.Pending(); return n == 32 })
	refusedAtOnce(t, "127.0.2.1", addr)
	testutil.Eventually(t, 10*time.Second, "busy counted", func() bool { return refused("busy") == 1 })
	publish(a, announce.Table{Endpoints: []announce.Endpoint{{VNI: 1, IP: netip.MustParseAddr("10.0.0.1"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}}})
	testutil.Eventually(t, 10*time.Second, "B pulls A's table while strangers fill their share", func() bool {
		tb, ok := recB.table(netip.MustParseAddr("127.0.0.91"))
		return ok && len(tb.Endpoints) == 1
	})
	if n, _ := a.tr.strangers.Pending(); n != 32 {
		t.Fatalf("%d strangers' streams waiting when B's pull went through, want 32: the deadline passed too soon for this test", n)
	}

	// The whole pre-authentication phase has a deadline.
	start := time.Now()
	for _, c := range held {
		c.SetReadDeadline(time.Now().Add(preauth + 2*time.Second))
		io.Copy(io.Discard, c)
	}
	if took := time.Since(start); took > preauth+time.Second {
		t.Fatalf("held streams closed after %v, want within %v", took, preauth)
	}
	testutil.Eventually(t, 10*time.Second, "timeouts counted", func() bool { return refused("timeout") == 32 })
	testutil.Eventually(t, 10*time.Second, "nothing pending after the deadline", func() bool {
		n, bytes := a.tr.strangers.Pending()
		return n == 0 && bytes == 0
	})

	// Rate: a source opening streams faster than 5 a second runs out of
	// its burst.
	for i := 0; refused("source-rate") == 0; i++ {
		if i == 200 {
			t.Fatalf("200 streams from one source in a row were never refused for their rate: %v", a.Stats().Refused)
		}
		// A refused stream may be reset before the dial returns.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.3.1")}}
		if c, err := d.Dial("tcp", addr); err == nil {
			c.Close()
		}
		time.Sleep(time.Millisecond)
	}

	// Every refusal above was counted; the lines logged stayed within the
	// budget of each kind.
	for _, reason := range []string{"timeout", "source-rate"} {
		if n := logs.count("reason=" + reason); n > 5 {
			t.Errorf("%d lines logged for %q refusals, want at most 5", n, reason)
		}
	}
	if n := refused("busy"); n != 1 {
		t.Errorf("%d streams refused as busy, want only the stranger's: a member was counted a stranger", n)
	}
	t.Logf("stats: %+v", a.Stats())
}

// TestAttackStrangerPackets: junk UDP is refused unread by memberlist, counted,
// and costs a few log lines; members stay members meanwhile.
func TestAttackStrangerPackets(t *testing.T) {
	logs := &lineCounter{}
	a, _, portA := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.101"), Secret: secretA, Log: slog.New(logs)})
	addr := net.JoinHostPort("127.0.0.101", strconv.Itoa(portA))
	b, _, _ := startNode(t, "127.0.0.102", secretA, []string{addr})
	testutil.Eventually(t, 10*time.Second, "A and B members", func() bool { return len(b.Members()) == 2 && len(a.Members()) == 2 })

	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.109")}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 3000
	p := make([]byte, 200)
	for i := range sent {
		rand.Read(p)
		p[0] = byte(i % 2) // an encryption version: each costs a check
		conn.Write(p)
		if i%50 == 0 {
			time.Sleep(5 * time.Millisecond) // not to outrun the socket buffer
		}
	}
	// Every packet is refused, save those the kernel dropped for a full
	// buffer if this machine is busy. The socket hands packets over in
	// order: once an empty packet sent after the junk is refused (as
	// malformed), all the junk that arrived has been counted. It is sent
	// again until then, in case the kernel dropped it too.
	testutil.Eventually(t, 10*time.Second, "the empty packet after the junk refused", func() bool {
		if a.Stats().Refused["packet-malformed"] > 0 {
			return true
		}
		conn.Write(nil)
		return false
	})
	refused := func() uint64 { st := a.Stats(); return st.Refused["packet-unauthentic"] + st.Refused["packet-rate"] }
	st := a.Stats()
	if n := refused(); n < sent*95/100 {
		t.Errorf("%d of %d packets refused", n, sent)
	}
	// Checked against the keys: the burst, and what the rate refilled
	// while sending (well under a second); the rest dropped unchecked.
	if st.Refused["packet-rate"] == 0 || st.Refused["packet-unauthentic"] > strangerPacketBurst+strangerPacketRate {
		t.Errorf("refusals %v: want at most the stranger's burst and a second's rate checked, the rest dropped by rate", st.Refused)
	}
	if n := logs.count("memberlist"); n != 0 {
		t.Errorf("memberlist logged %d lines: it saw junk", n)
	}
	// (The empty packets, a reason of their own, log a line of their own.)
	if n := logs.count("gossip port refused") - logs.count("reason=packet-malformed"); n > 10 {
		t.Errorf("%d lines logged for %d refused packets, want at most 10", n, sent)
	}
	// Members stay members: B's packets (probes, acks) still reach
	// memberlist after the junk.
	heard := a.Stats().Accepted["packet"]
	testutil.Eventually(t, 10*time.Second, "A hears from B after the junk", func() bool { return a.Stats().Accepted["packet"] >= heard+2 })
	for _, m := range a.Members() {
		if m.Status != "alive" {
			t.Errorf("member %+v not alive after the junk", m)
		}
	}
	t.Logf("stats: %+v; %d lines logged", st, len(logs.lines))
}

// TestMemberlistLinesWithinBudget: memberlist's lines about bad packets,
// however many, pass a few per window, then one line says how many were
// held back.
func TestMemberlistLinesWithinBudget(t *testing.T) {
	logs := &lineCounter{}
	const window = 50 * time.Millisecond
	c := &Cluster{lim: limit.NewLogger(slog.New(logs), limit.DefaultLogBurst, window)}
	ml := &memberlistLogger{lim: c.lim}
	std := ml.std()
	for i := range 1000 {
		std.Printf("[ERR] memberlist: Decrypt packet failed: no installed keys could decrypt the message from=198.18.0.%d:7947", i%250)
	}
	std.Printf("[WARN] memberlist: Got ping for unexpected node x from=198.18.0.9:7947")
	time.Sleep(2 * window)
	c.lim.Flush()
	if n := logs.count("Decrypt packet failed: no installed keys"); n != 5 {
		t.Errorf("%d decrypt lines logged, want 5", n)
	}
	if n := logs.count("unexpected node"); n != 1 {
		t.Errorf("another kind of line was held back (%d logged)", n)
	}
	if n := logs.count("suppressed=995"); n != 1 {
		t.Errorf("no line tells the 995 held back: %q", logs.lines)
	}
}

func TestLogKind(t *testing.T) {
	cases := map[string]string{
		"[ERR] memberlist: Decrypt packet failed: no installed keys from=1.2.3.4:5": "[ERR] memberlist: Decrypt packet failed",
		"[DEBUG] memberlist: Stream connection from=1.2.3.4:5":                      "[DEBUG] memberlist: Stream connection from",
		"[INFO] serf: EventMemberJoin: 198.18.0.2 198.18.0.2":                       "[INFO] serf: EventMemberJoin",
		"[WARN] memberlist: Got ping for unexpected node x from=1.2.3.4:5":          "[WARN] memberlist: Got ping for unexpected node x from",
		"no colon at all " + strings.Repeat("x", 100):                               "no colon at all " + strings.Repeat("x", 64),
	}
	for line, want := range cases {
		if got := logKind(line); got != want {
			t.Errorf("logKind(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestAuthenticator(t *testing.T) {
	key := bytes.Repeat([]byte{3}, 32)
	a, err := newAuthenticator([][]byte{key})
	if err != nil {
		t.Fatal(err)
	}
	g := (*a.aeads.Load())[0]
	nonce := make([]byte, gcmNonce)
	aad := []byte{encryptMsg, 0, 0, 0, 9}
	msg := append(append([]byte{1}, nonce...), g.Seal(nil, nonce, []byte("hi"), aad)...)
	if !a.open(msg, aad, nil) {
		t.Fatal("a message under the key did not open")
	}
	if a.open(msg, nil, nil) {
		t.Fatal("a message opened without its header")
	}
	a.setKeys([][]byte{bytes.Repeat([]byte{4}, 32)})
	if a.open(msg, aad, nil) {
		t.Fatal("a message opened under a key removed")
	}
	for _, bad := range [][]byte{nil, {1}, {2, 0, 0}, append([]byte{7}, msg[1:]...)} {
		if a.open(bad, aad, nil) {
			t.Fatalf("%x opened", bad)
		}
	}
}
