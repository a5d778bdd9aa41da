package swarmtrust

// Fuzz targets of what the trust agent reads: a peer's message over TLS,
// the swarm directory (node certificate and state.json) and the kept
// secret file. `go test` runs the seeds (f.Add and testdata/fuzz) as
// regression tests; `make fuzz` fuzzes each for a bounded time.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vxsec/vxsec/internal/certs"
	"github.com/vxsec/vxsec/internal/limit"
	"github.com/vxsec/vxsec/swarmtrust/testpki"
)

var fuzzLog = slog.New(slog.DiscardHandler)

// fuzzConn is a peer's side of an exchange: what it sends, and nothing else.
type fuzzConn struct {
	net.Conn
	r io.Reader
}

func (c fuzzConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func fuzzMessageLine(m message) []byte {
	b, _ := json.Marshal(m)
	return append(b, '\n')
}

// FuzzReceive: a peer's message. An accepted one is of this protocol
// version, holds no secret or one of SecretBytes, came in at most
// maxMessage bytes, and is what the peer encoded. Whatever two peers send,
// the node ends on the same record in either order of their messages (the
// cluster converges), adopts only a record a manager of this swarm signed,
// and never trades its record for one of a lower generation.
func FuzzReceive(f *testing.F) {
	ca, err := testpki.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	dirs := map[string]string{}
	for _, n := range []struct{ id, role string }{{"m1", RoleManager}, {"w2", RoleWorker}} {
		dirs[n.id] = f.TempDir()
		if err := ca.Write(testpki.Node{Dir: dirs[n.id], Cluster: cluster, ID: n.id, Role: n.role,
			Managers: []testpki.Manager{{NodeID: "m1", Addr: "127.0.0.1:2377"}}}); err != nil {
			f.Fatal(err)
		}
	}
	manager, err := loadCredentials(dirs["m1"])
	if err != nil {
		f.Fatal(err)
	}
	creds, err := loadCredentials(dirs["w2"]) // the receiving node
	if err != nil {
		f.Fatal(err)
	}
	secret := func(b byte) []byte { return bytes.Repeat([]byte{b}, SecretBytes) }
	signed := func(b byte, gen uint64) *record {
		r, err := issue(manager, secret(b), gen)
		if err != nil {
			f.Fatal(err)
		}
		return r
	}
	older := fuzzMessageLine(message{Version: protocolVersion, Cluster: cluster, Record: signed(1, 1)})
	newer := fuzzMessageLine(message{Version: protocolVersion, Cluster: cluster, Record: signed(2, 2)})
	f.Add(older, newer, false)
	f.Add(newer, older, true)
	f.Add(fuzzMessageLine(message{Version: protocolVersion, Cluster: cluster}), older, true)
	f.Add(fuzzMessageLine(message{Version: protocolVersion, Cluster: "another-swarm", Record: signed(3, 9)}), newer, true)
	f.Add(fuzzMessageLine(message{Version: protocolVersion, Cluster: cluster, Record: &record{Secret: secret(4), Generation: 9, By: "m1"}}), newer, false)
	f.Add([]byte(`{"v":1,"cluster":"x"}`+"\n"), []byte(`{"v":2,"record":{"secret":"c2hvcnQ="}}`+"\n"), false)
	f.Add(bytes.Repeat([]byte("a"), maxMessage+1), []byte("{}"), false)
	f.Fuzz(func(t *testing.T, a, b []byte, hasSecret bool) {
		ma, errA := receive(fuzzConn{r: bytes.NewReader(a)})
		mb, errB := receive(fuzzConn{r: bytes.NewReader(b)})
		for _, c := range []struct {
			in  []byte
			m   message
			err error
		}{{a, ma, errA}, {b, mb, errB}} {
			if c.err != nil {
				if !strings.Contains(c.err.Error(), "peer") {
					t.Fatalf("receive(%q): error %q does not say it is the peer's message", c.in, c.err)
				}
				continue
			}
			if c.m.Version != protocolVersion || (c.m.Record != nil && len(c.m.Record.Secret) != SecretBytes) {
				t.Fatalf("receive(%q) accepted %+v", c.in, c.m)
			}
			if i := bytes.IndexByte(c.in, '\n'); i < 0 || i >= maxMessage {
				t.Fatalf("receive accepted a message of %d bytes, over %d", i+1, maxMessage)
			}
			again, err := receive(fuzzConn{r: bytes.NewReader(fuzzMessageLine(c.m))})
			if err != nil || !reflect.DeepEqual(again, c.m) {
				t.Fatalf("message %+v, encoded and received again: %+v, %v", c.m, again, err)
			}
		}
		if errA != nil || errB != nil {
			return
		}

		var own *record
		if hasSecret {
			own = &record{Secret: secret(9), Generation: 1, By: "m1"}
		}
		agent := func() *Agent {
			a := &Agent{log: fuzzLog, cluster: cluster, ready: make(chan struct{}), changed: make(chan []byte, 1)}
			a.lim = limit.NewLogger(fuzzLog, 1, time.Second)
			if own != nil {
				r := *own
				a.rec = &r
				a.delivered = r.Secret
				close(a.ready)
			}
			return a
		}
		ab, ba := agent(), agent()
		ab.consider(ma, "a", creds)
		ab.consider(mb, "b", creds)
		ba.consider(mb, "b", creds)
		ba.consider(ma, "a", creds)
		if (ab.rec == nil) != (ba.rec == nil) || ab.rec != nil && (!bytes.Equal(ab.rec.Secret, ba.rec.Secret) || ab.rec.Generation != ba.rec.Generation) {
			t.Fatalf("the order of two messages decided the secret: %+v then %+v gives %+v; the other order %+v", ma.Record, mb.Record, ab.rec, ba.rec)
		}
		if ab.rec == nil || own != nil && bytes.Equal(own.Secret, ab.rec.Secret) && own.Generation == ab.rec.Generation {
			return
		}
		if _, err := creds.verifyRecord(ab.rec); err != nil || ab.rec.By != "m1" {
			t.Fatalf("adopted %+v, which no manager of this swarm signed: %v", ab.rec, err)
		}
		if own != nil && own.Generation > ab.rec.Generation {
			t.Fatalf("traded generation %d for %d", own.Generation, ab.rec.Generation)
		}
	})
}

// FuzzReadNode: the swarm directory's node certificate file and state.json.
// Every certificate certs.ParsePEM returns is one the file holds, the identity
// ReadNode reports is a swarm node's (a node ID, a swarm ID, a swarm role),
// the managers are state.json's, and a refusal names the file at fault.
func FuzzReadNode(f *testing.F) {
	ca, err := testpki.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := ca.Write(testpki.Node{Dir: dir, Cluster: cluster, ID: "kq3wd8m2zx7v1n5b0c4j6h9fa", Role: RoleManager,
		Managers: []testpki.Manager{{NodeID: "kq3wd8m2zx7v1n5b0c4j6h9fa", Addr: "10.0.0.11:2377"}, {NodeID: "p0o9i8u7y6t5r4e3w2q1a2s3d", Addr: "[fd00::12]:2377"}}}); err != nil {
		f.Fatal(err)
	}
	cert, _ := os.ReadFile(filepath.Join(dir, certFile))
	state, _ := os.ReadFile(filepath.Join(dir, stateFile))
	f.Add(cert, state)
	f.Add(cert, []byte{})
	f.Add(append(pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8, 42}}), cert...), []byte(`[]`))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), state)
	f.Fuzz(func(t *testing.T, cert, state []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "certificates"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, certFile), cert, 0o600); err != nil {
			t.Fatal(err)
		}
		// An empty state is a node that has not written state.json yet.
		if len(state) > 0 {
			if err := os.WriteFile(filepath.Join(dir, stateFile), state, 0o600); err != nil {
				t.Fatal(err)
			}
		}

		parsed, certErr := certs.ParsePEM(cert)
		if certErr == nil {
			if len(parsed) == 0 {
				t.Fatal("certs.ParsePEM: no error and no certificate")
			}
			for _, c := range parsed {
				if !fuzzHoldsDER(cert, c.Raw) {
					t.Fatalf("certs.ParsePEM returned a certificate the file does not hold: %x", c.Raw)
				}
			}
		}

		n, err := ReadNode(dir)
		if err != nil {
			switch {
			case certErr != nil || strings.Contains(err.Error(), "swarm node certificate"):
				if !strings.Contains(err.Error(), filepath.Join(dir, certFile)) {
					t.Fatalf("ReadNode: error %q does not name the certificate file", err)
				}
			case !strings.Contains(err.Error(), filepath.Join(dir, stateFile)):
				t.Fatalf("ReadNode: error %q names neither file", err)
			}
			return
		}
		if certErr != nil {
			t.Fatalf("ReadNode accepted a certificate file certs.ParsePEM refuses: %v", certErr)
		}
		if n.ID == "" || n.ClusterID == "" || (n.Role != RoleManager && n.Role != RoleWorker) {
			t.Fatalf("ReadNode = %+v: not a swarm node's identity", n)
		}
		s := parsed[0].Subject
		if n.ID != s.CommonName || n.ClusterID != s.Organization[0] || n.Role != s.OrganizationalUnit[0] || !n.NotAfter.Equal(parsed[0].NotAfter) {
			t.Fatalf("ReadNode = %+v, but the first certificate is %v", n, s)
		}
		var want []Manager
		if len(state) > 0 {
			if err := json.Unmarshal(state, &want); err != nil {
				t.Fatalf("ReadNode accepted state.json that does not decode: %v", err)
			}
		}
		if !reflect.DeepEqual(n.Managers, want) {
			t.Fatalf("managers %+v, state.json has %+v", n.Managers, want)
		}
	})
}

// fuzzHoldsDER: a certificate certs.ParsePEM returns is the content of one of
// the file's PEM blocks.
func fuzzHoldsDER(file, der []byte) bool {
	for {
		var b *pem.Block
		b, file = pem.Decode(file)
		if b == nil {
			return false
		}
		if b.Type == "CERTIFICATE" && bytes.Equal(b.Bytes, der) {
			return true
		}
	}
}

// FuzzKeptSecret: the file that keeps the agreed secret across restarts. A
// damaged one is ignored, never fatal (the node then agrees a secret again);
// an intact one of this swarm gives back exactly its secret; one of another
// swarm is never used.
func FuzzKeptSecret(f *testing.F) {
	ca, err := testpki.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := ca.Write(testpki.Node{Dir: dir, Cluster: cluster, ID: "kq3wd8m2zx7v1n5b0c4j6h9fa", Role: RoleWorker}); err != nil {
		f.Fatal(err)
	}
	kept := func(cl string, n int) []byte {
		b, _ := json.Marshal(savedFile{Cluster: cl, Record: &record{Secret: bytes.Repeat([]byte{4}, n), Generation: 3, Created: 1714557600123456789, By: "p0o9i8u7y6t5r4e3w2q1a2s3d"}})
		return b
	}
	f.Add(kept(cluster, SecretBytes))
	f.Add(kept("another-swarm", SecretBytes))
	f.Add(kept(cluster, 16))
	f.Add([]byte(`{"cluster":"` + cluster + `","record":null}`))
	f.Add([]byte(`{"cluster":"` + cluster + `","rec`))
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(t.TempDir(), "swarm-secret.json")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{Dir: dir, SecretFile: file, Log: fuzzLog})
		if err != nil {
			t.Fatalf("New with kept secret %q: %v; a damaged kept secret must not be fatal", data, err)
		}
		var sf savedFile
		intact := json.Unmarshal(data, &sf) == nil && sf.Record != nil && len(sf.Record.Secret) == SecretBytes && sf.Cluster == cluster
		if !intact {
			if a.hasSecret() {
				t.Fatalf("kept file %q (not an intact secret of this swarm) gave a secret", data)
			}
			return
		}
		got, err := a.Secret(context.Background())
		if err != nil || !bytes.Equal(got, sf.Record.Secret) {
			t.Fatalf("kept secret %x came back as %x, %v", sf.Record.Secret, got, err)
		}
		if st := a.Status(); st.SecretID != sf.Record.id() || st.ClusterID != cluster {
			t.Fatalf("status %+v does not show the kept secret", st)
		}
	})
}

// FuzzEvictionList: an eviction list as it rides in front of a pulled
// table. Whatever the bytes, decoding and checking never panic, and a
// list that passes is within every bound and signed by the manager (the
// only signer the fuzzer cannot forge: its one valid seed is m1's).
func FuzzEvictionList(f *testing.F) {
	ca, err := testpki.NewCA()
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	managers := []testpki.Manager{{NodeID: "m1", Addr: "127.0.1.1:2377"}}
	if err := ca.Write(testpki.Node{Dir: dir, Cluster: cluster, ID: "m1", Role: RoleManager, Managers: managers}); err != nil {
		f.Fatal(err)
	}
	m1, err := loadCredentials(dir)
	if err != nil {
		f.Fatal(err)
	}
	e, err := issueEvictions(m1, nil, []string{"w3", "w4"}, time.Unix(1790000000, 0))
	if err != nil {
		f.Fatal(err)
	}
	good, _ := json.Marshal(e)
	f.Add(good)
	f.Add([]byte(`{"seq":1,"nodes":[{"id":"","until":1}],"by":"m1"}`))
	f.Add([]byte(`{"seq":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEvictions(data)
		if err != nil {
			return
		}
		if err := m1.verifyEvictions(e); err != nil {
			return
		}
		if e.By != "m1" || len(e.Nodes) > maxEvicted {
			t.Fatalf("accepted a list by %q of %d nodes", e.By, len(e.Nodes))
		}
		for _, n := range e.Nodes {
			if n.ID == "" || len(n.ID) > maxNodeID {
				t.Fatalf("accepted a node ID %q", n.ID)
			}
		}
	})
}
