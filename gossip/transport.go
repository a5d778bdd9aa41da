package gossip

import (
	"bufio"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// syncMagic opens a table pull on the gossip port's TCP listener. memberlist
// streams open with a message type (small numbers, or 244 for a label), so
// the first byte tells the two apart: the cluster needs one port, not two.
const syncMagic = 0xA7

// peekTimeout bounds how long an accepted stream may stay silent.
const peekTimeout = 5 * time.Second

// demuxTransport is memberlist's own network transport, with table pulls
// taken off its stream channel before memberlist sees them.
type demuxTransport struct {
	*memberlist.NetTransport
	streams chan net.Conn
	serve   func(net.Conn)
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func newDemuxTransport(addr string, port int, serve func(net.Conn), logger *memberlistLogger) (*demuxTransport, error) {
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{addr}, BindPort: port, Logger: logger.std(),
	})
	if err != nil {
		return nil, err
	}
	t := &demuxTransport{NetTransport: nt, streams: make(chan net.Conn), serve: serve, done: make(chan struct{})}
	t.wg.Add(1)
	go t.route()
	return t, nil
}

func (t *demuxTransport) route() {
	defer t.wg.Done()
	for {
		select {
		case <-t.done:
			return
		case conn := <-t.NetTransport.StreamCh():
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				t.dispatch(conn)
			}()
		}
	}
}

func (t *demuxTransport) dispatch(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(peekTimeout))
	br := bufio.NewReader(conn)
	first, err := br.Peek(1)
	if err != nil {
		conn.Close()
		return
	}
	conn.SetReadDeadline(time.Time{})
	pc := &peekedConn{Conn: conn, r: br}
	if first[0] == syncMagic {
		br.Discard(1)
		t.serve(pc)
		return
	}
	select {
	case t.streams <- pc:
	case <-t.done:
		conn.Close()
	}
}

// StreamCh is what memberlist reads: every stream but table pulls.
func (t *demuxTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the listeners and the routing goroutines.
func (t *demuxTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.once.Do(func() { close(t.done) })
	t.wg.Wait()
	return err
}

// peekedConn reads through the buffer that peeked at its first byte.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
