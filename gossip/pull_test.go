package gossip

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/testutil"
)

var (
	secretA = []byte("0123456789abcdef0123456789abcdef")
	secretB = []byte("fedcba9876543210fedcba9876543210")
)

// pipePull runs a version 2 pull between a client holding clientSecrets
// and a server holding serverSecrets, over an in-memory connection, with
// ephemeral keys or without.
func pipePull(t *testing.T, clientSecrets, serverSecrets [][]byte, ephemeral bool) ([]byte, error, error) {
	t.Helper()
	cc, sc := net.Pipe()
	defer cc.Close()
	serr := make(chan error, 1)
	go func() {
		defer sc.Close()
		var magic [1]byte
		if _, err := io.ReadFull(sc, magic[:]); err != nil {
			serr <- err
			return
		}
		serr <- servePull(sc, serverSecrets, newNonce(), func() []byte { return []byte("the table") }, func() {}, nil)
	}()
	plain, err := clientPull(cc, clientSecrets, newNonce(), nil, ephemeral)
	cc.Close()
	return plain, err, <-serr
}

// TestPullProof: a client proves any secret the server holds, in either
// direction of a secret change; one holding none gets nothing.
func TestPullProof(t *testing.T) {
	cases := []struct {
		name           string
		client, server [][]byte
		ok             bool
	}{
		{"same secret", [][]byte{secretA}, [][]byte{secretA}, true},
		{"server switched first", [][]byte{secretA}, [][]byte{secretB, secretA}, true},
		{"client switched first", [][]byte{secretB, secretA}, [][]byte{secretA}, true},
		{"both switched", [][]byte{secretB, secretA}, [][]byte{secretB, secretA}, true},
		{"no shared secret", [][]byte{secretB}, [][]byte{secretA}, false},
		{"open cluster", [][]byte{nil}, [][]byte{nil}, true},
	}
	for _, tc := range cases {
		for _, eph := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ephemeral=%v", tc.name, eph), func(t *testing.T) {
				plain, cerr, serr := pipePull(t, tc.client, tc.server, eph)
				if tc.ok {
					if cerr != nil || serr != nil || string(plain) != "the table" {
						t.Fatalf("pull = %q, client err %v, server err %v", plain, cerr, serr)
					}
					return
				}
				if !errors.Is(serr, errBadProof) || cerr == nil {
					t.Fatalf("client err %v, server err %v: want the proof refused", cerr, serr)
				}
			})
		}
	}
}

// rawPull opens a connection to a node's gossip port from source and
// sends magic.
func rawConn(t *testing.T, source, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}, Timeout: 2 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn
}

// TestAttackStrangerPull: against a running node, a client without
// the secret gets the server's nonce and then the connection closes; a
// replayed proof (valid for another connection's nonce) fares the same;
// version 1 gets nothing at all; a member's pull gets the table.
func TestAttackStrangerPull(t *testing.T) {
	c, _, port := startNode(t, "127.0.0.61", secretA, nil)
	publish(c, announce.Table{})
	addr := net.JoinHostPort("127.0.0.61", strconv.Itoa(port))
	const stranger = "127.0.0.69"

	// Without the secret: a proof under another one.
	conn := rawConn(t, stranger, addr)
	conn.Write([]byte{pullMagicV2})
	sn, err := readHello(conn)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := makeProof([][]byte{secretB}, sn, newNonce())
	conn.Write(p.encode())
	if rest, _ := io.ReadAll(conn); len(rest) != 0 {
		t.Fatalf("a stranger got %d bytes after the nonce", len(rest))
	}

	// A replay: a proof valid for the first connection's nonce, sent on a
	// second connection.
	first := rawConn(t, stranger, addr)
	first.Write([]byte{pullMagicV2})
	sn1, err := readHello(first)
	if err != nil {
		t.Fatal(err)
	}
	recorded, _ := makeProof([][]byte{secretA}, sn1, newNonce())
	second := rawConn(t, stranger, addr)
	second.Write([]byte{pullMagicV2})
	if _, err := readHello(second); err != nil {
		t.Fatal(err)
	}
	second.Write(recorded.encode())
	if rest, _ := io.ReadAll(second); len(rest) != 0 {
		t.Fatalf("a replayed proof got %d bytes", len(rest))
	}
	// The proof on the connection it was made for works (the positive
	// control of the replay).
	first.Write(recorded.encode())
	sealed, err := readSealed(first)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openTable([][]byte{secretA}, recorded.clientNonce, sn1, sealed); err != nil {
		t.Fatal(err)
	}

	// Version 1: the old request gets nothing.
	v1 := rawConn(t, stranger, addr)
	v1.Write(append([]byte{pullMagicV1}, newNonce()...))
	if rest, _ := io.ReadAll(v1); len(rest) != 0 {
		t.Fatalf("a version 1 pull got %d bytes", len(rest))
	}

	testutil.Eventually(t, 5*time.Second, "refusals counted", func() bool {
		st := c.Stats()
		return st.Refused["pull-proof"] == 2 && st.Refused["pull-v1"] == 1 && st.Accepted["pull"] == 1
	})
}

// oldServer serves table pulls as version 1 did: version 1 pulls get the
// table, and anything else goes to memberlist, which with encryption on
// answers with an encrypted error message (or, in an open cluster, closes).
type oldServer struct {
	l     net.Listener
	conns atomic.Int32
	open  bool
	wg    sync.WaitGroup
}

func startOldServer(t *testing.T, secret []byte, table announce.Table, open bool) *oldServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.71:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &oldServer{l: l, open: open}
	raw, _ := json.Marshal(table)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				var first [1]byte
				if _, err := io.ReadFull(conn, first[:]); err != nil {
					return
				}
				if first[0] != pullMagicV1 {
					if !s.open {
						conn.Write([]byte{encryptMsg, 0, 0, 0, 40, 1})
					}
					return
				}
				cn := make([]byte, nonceSize)
				if _, err := io.ReadFull(conn, cn); err != nil {
					return
				}
				sn := newNonce()
				aead, _ := sessionAEAD(secret, cn, sn)
				conn.Write(append(sn, sealedFrame(seal(aead, raw))...))
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		s.wg.Wait()
	})
	return s
}

// TestPullFromOldServer: a client pulls from a member that serves only
// version 1, and remembers it (one connection a pull from then on); in an
// open cluster, where the old server just closes, it still gets the table.
func TestPullFromOldServer(t *testing.T) {
	c, _, _ := startNode(t, "127.0.0.72", secretA, nil)
	want := announce.Table{Host: netip.MustParseAddr("127.0.0.71"), Version: announce.Version{Epoch: 1, Seq: 2}}
	old := startOldServer(t, secretA, want, false)
	addr := old.l.Addr().String()
	for i, wantConns := range []int32{2, 3} {
		got, _, err := c.pull(context.Background(), addr, want.Host, announce.Version{})
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		if got.Version != want.Version {
			t.Fatalf("pull %d: version %v, want %v", i, got.Version, want.Version)
		}
		if n := old.conns.Load(); n != wantConns {
			t.Fatalf("after pull %d the old server saw %d connections, want %d", i, n, wantConns)
		}
	}

	openC, _, _ := startNode(t, "127.0.0.73", nil, nil)
	oldOpen := startOldServer(t, nil, want, true)
	if got, _, err := openC.pull(context.Background(), oldOpen.l.Addr().String(), want.Host, announce.Version{}); err != nil || got.Version != want.Version {
		t.Fatalf("open cluster: pull = %v, %v", got.Version, err)
	}
}

// TestAttackOversizedTable: a member's table over the bounds is refused
// (counted, logged, not installed) and not pulled again; its next table,
// within them, is installed.
func TestAttackOversizedTable(t *testing.T) {
	a, _, portA := startNode(t, "127.0.0.81", secretA, nil)
	seed := []string{net.JoinHostPort("127.0.0.81", strconv.Itoa(portA))}
	// B's repair pass, which pulls every member whose version is ahead,
	// runs every 50 ms rather than every antiEntropy.
	b, recB, _ := startNodeConfig(t, Config{Addr: netip.MustParseAddr("127.0.0.82"), Secret: secretA, Seeds: seed, timing: timing{antiEntropy: 50 * time.Millisecond}})
	hostA := netip.MustParseAddr("127.0.0.81")
	var big announce.Table
	for i := range announce.MaxKeysPerHost + 1 {
		big.Keys = append(big.Keys, announce.Key{Epoch: uint64(i), Public: bytes.Repeat([]byte{1}, 32)})
	}
	publish(a, big)
	testutil.Eventually(t, 10*time.Second, "B refuses A's table", func() bool { return b.Stats().Refused["table-limits"] == 1 })
	// B may hold A's first table (empty, within the bounds), pulled
	// before the big one was published; never the big one.
	if got, ok := recB.table(hostA); ok && len(got.Keys) > announce.MaxKeysPerHost {
		t.Fatal("B installed a table over the bounds")
	}
	// Two repair passes: the second began after the refusal was counted.
	// A pull either of them queued is marked running from then until it
	// is done, its refusal counted.
	passes := b.repairs.Load()
	testutil.Eventually(t, 5*time.Second, "two repair passes on B", func() bool { return b.repairs.Load() >= passes+2 })
	testutil.Eventually(t, 5*time.Second, "no pull of A queued or running on B", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return !b.pulling["127.0.0.81"]
	})
	if n := b.Stats().Refused["table-limits"]; n != 1 {
		t.Fatalf("B pulled the refused version again (%d refusals)", n)
	}
	publish(a, announce.Table{IPsec: announce.IPsec{Keys: big.Keys[:1]}})
	testutil.Eventually(t, 10*time.Second, "B installs A's next table", func() bool {
		got, ok := recB.table(hostA)
		return ok && len(got.Keys) == 1
	})
}

// TestPullV1OnlyForMembers: a host of the previous release (version 1
// client, a member's address) still pulls an upgraded host's table during a
// rolling upgrade; a stranger asking the same way gets nothing.
func TestPullV1OnlyForMembers(t *testing.T) {
	a, _, portA := startNode(t, "127.0.0.71", secretA, nil)
	addr := net.JoinHostPort("127.0.0.71", strconv.Itoa(portA))
	b, _, _ := startNode(t, "127.0.0.72", secretA, []string{addr})
	testutil.Eventually(t, 10*time.Second, "A and B members", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	publish(a, announce.Table{Endpoints: []announce.Endpoint{{VNI: 1, IP: netip.MustParseAddr("10.0.0.1"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}}})

	pullV1From := func(src string) ([]byte, error) {
		conn := rawConn(t, src, addr)
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		return clientPullV1(conn, [][]byte{secretA}, newNonce())
	}
	// The member's address: served, and the table is A's.
	var plain []byte
	testutil.Eventually(t, 10*time.Second, "a version 1 pull from B's address served A's table", func() bool {
		var err error
		plain, err = pullV1From("127.0.0.72")
		return err == nil && bytes.Contains(plain, []byte("10.0.0.1"))
	})
	// A stranger, holding the secret even: nothing.
	if got, err := pullV1From("127.0.0.79"); err == nil || len(got) != 0 {
		t.Fatalf("a stranger's version 1 pull got %d bytes (err %v)", len(got), err)
	}
	testutil.Eventually(t, 10*time.Second, "the stranger's pull counted", func() bool { return a.Stats().Refused["pull-v1"] == 1 })
	// Counted once the server has written the table, which the client
	// may have read before.
	testutil.Eventually(t, 5*time.Second, "the member's version 1 pull counted as served", func() bool { return a.Stats().Accepted["pull-v1"] > 0 })
}

// wireRecorder keeps every byte that crosses a connection, both ways.
type wireRecorder struct {
	net.Conn
	mu      sync.Mutex
	in, out bytes.Buffer
}

func (r *wireRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.in.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

func (r *wireRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// TestAttackRecordedPull: forward secrecy of table pulls. The attacker
// recorded a pull on the wire and later learns the cluster secret (a leak,
// or a member's disk). From the recording it takes both nonces and the
// sealed table, and opens it with the secret. Control: a pull without
// ephemeral keys (what a member of the previous release gets) opens, and
// the attacker reads the table. With ephemeral keys it opens under no key
// the secret and the recording give.
func TestAttackRecordedPull(t *testing.T) {
	for _, eph := range []bool{false, true} {
		cc, sc := net.Pipe()
		rec := &wireRecorder{Conn: cc}
		done := make(chan error, 1)
		go func() {
			defer sc.Close()
			var magic [1]byte
			if _, err := io.ReadFull(sc, magic[:]); err != nil {
				done <- err
				return
			}
			done <- servePull(sc, [][]byte{secretA}, newNonce(), func() []byte { return []byte(`{"host":"198.18.0.2"}`) }, func() {}, nil)
		}()
		plain, err := clientPull(rec, [][]byte{secretA}, newNonce(), nil, eph)
		cc.Close()
		if err != nil || <-done != nil || string(plain) != `{"host":"198.18.0.2"}` {
			t.Fatalf("ephemeral=%v: the pull itself failed: %q %v", eph, plain, err)
		}
		// The recording: server → client is the greeting (magic, nonce),
		// [its ephemeral key], the sealed frame; client → server is the
		// magic, then its nonce first.
		fromServer, fromClient := rec.in.Bytes(), rec.out.Bytes()
		sn, cn := fromServer[1:1+nonceSize], fromClient[1:1+nonceSize]
		rest := fromServer[1+nonceSize:]
		if eph {
			rest = rest[ephemeralSize:]
		}
		sealed, err := readSealed(bytes.NewReader(rest))
		if err != nil {
			t.Fatal(err)
		}
		got, err := openTable([][]byte{secretA}, cn, sn, sealed)
		switch {
		case !eph && err != nil:
			t.Fatalf("control: the secret and the recording do not open a pull without ephemeral keys: %v", err)
		case !eph:
			t.Logf("control (no ephemeral keys): the attacker opened the recorded pull with the secret: %s", got)
		case err == nil:
			t.Fatalf("the attacker opened a recorded pull with ephemeral keys: %s", got)
		default:
			t.Logf("with ephemeral keys: %d sealed bytes recorded, opened by nothing the secret and the recording give (%v)", len(sealed), err)
		}
	}
}
