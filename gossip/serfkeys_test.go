package gossip

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/internal/testutil"
)

// TestAttackSerfKeyQueries: a member sends serf's key-management queries
// to the others (through its own serf's KeyManager, as any member, or
// anyone holding one period's key, could). The queries reach the others
// and are answered, but no member lists a key, and none installs, uses or
// removes one: the keyrings stay what vxsec derived from the secret, and
// the cluster stays one.
//
// With closeKeyQueries's call in Start removed, every member answers
// list-keys with its 3 keys (the next period's among them), both victims
// install the attacker's key and remove the next period's, and use-key
// splits the cluster: the attacker's own handler makes the new key
// primary before its query goes out, and no transport takes a packet
// under a key not derived from the secret. Each of those fails the test.
func TestAttackSerfKeyQueries(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	// Probes every 100 ms find a member cut off within a second
	// (suspicion included), so that a split shows in the wait below.
	fast := timing{probeInterval: 100 * time.Millisecond, probeTimeout: 50 * time.Millisecond, suspicionMaxMult: 2}
	start := func(addr string, seeds []string) (*Cluster, *recorder, int) {
		return startNodeConfig(t, Config{Addr: netip.MustParseAddr(addr), Secret: secret, Seeds: seeds, timing: fast})
	}
	attacker, _, port := start("127.0.0.111", nil)
	seed := []string{net.JoinHostPort("127.0.0.111", strconv.Itoa(port))}
	b, _, _ := start("127.0.0.112", seed)
	c, recC, _ := start("127.0.0.113", seed)
	victims := []*Cluster{b, c}
	alive := func() bool {
		for _, m := range []*Cluster{attacker, b, c} {
			n := 0
			for _, x := range m.Members() {
				if x.Status == "alive" {
					n++
				}
			}
			if n != 3 {
				return false
			}
		}
		return true
	}
	testutil.Eventually(t, 10*time.Second, "three members see each other alive", alive)

	fresh := make([]byte, 32)
	rand.Read(fresh)
	b64 := base64.StdEncoding.EncodeToString
	b.keyMu.Lock()
	_, primary, next, err := gossipKeys(b.secret, b.KeyPeriod())
	b.keyMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}

	km := attacker.serf.KeyManager()
	// The order is an attacker's: learn the keys, plant one's own, remove
	// the next period's (which splits the cluster at the next rotation),
	// make one's own primary, and only then remove ours: serf refuses to
	// remove the primary key.
	cases := []struct {
		name string
		send func() (*serf.KeyResponse, error)
	}{
		{"list-keys", km.ListKeys},
		{"install-key", func() (*serf.KeyResponse, error) { return km.InstallKey(b64(fresh)) }},
		{"remove-key next", func() (*serf.KeyResponse, error) { return km.RemoveKey(b64(next)) }},
		{"use-key", func() (*serf.KeyResponse, error) { return km.UseKey(b64(fresh)) }},
		{"remove-key primary", func() (*serf.KeyResponse, error) { return km.RemoveKey(b64(primary)) }},
	}
	isFresh := func(k []byte) bool { return bytes.Equal(k, fresh) }
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A query is left open 320 ms (serf's default for the tests'
			// gossip interval), which a loaded host may overrun: ask again
			// until every member answered.
			var resp *serf.KeyResponse
			for try := 0; try < 5 && (resp == nil || resp.NumResp < resp.NumNodes); try++ {
				resp, _ = tc.send() // it errs whenever a member reports failure
			}
			// serf's handlers give a message only with a failure.
			refused, keys := 0, 0
			for _, v := range victims {
				if _, ok := resp.Messages[v.serf.LocalMember().Name]; ok {
					refused++
				}
			}
			for _, n := range resp.Keys {
				keys += n
			}
			t.Logf("%s: %d of %d members answered, %d failures, %d keys listed; victims refused %d of %d: %q",
				tc.name, resp.NumResp, resp.NumNodes, resp.NumErr, keys, refused, len(victims), resp.Messages)
			// The attack path is open: the query reached every member, the
			// victims included, and their handlers answered.
			if resp.NumNodes != 3 || resp.NumResp != resp.NumNodes {
				t.Errorf("%d of %d members answered; want all 3", resp.NumResp, resp.NumNodes)
			}
			if refused != len(victims) {
				t.Errorf("%d of %d victims refused", refused, len(victims))
			}
			if keys != 0 {
				t.Errorf("members listed %d keys: %v", keys, resp.Keys)
			}
			for _, v := range victims {
				v.keyMu.Lock()
				prev, cur, next, err := gossipKeys(v.secret, v.KeyPeriod())
				held, prim := slices.Clone(v.keyring.GetKeys()), v.keyring.GetPrimaryKey()
				v.keyMu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
				name := v.serf.LocalMember().Name
				if !bytes.Equal(prim, cur) {
					t.Errorf("%s: primary key is not the period's (the attacker's: %v)", name, isFresh(prim))
				}
				if slices.ContainsFunc(held, isFresh) {
					t.Errorf("%s holds the attacker's key", name)
				}
				for _, k := range [][]byte{prev, cur, next} {
					if !slices.ContainsFunc(held, func(h []byte) bool { return bytes.Equal(h, k) }) {
						t.Errorf("%s lost one of its period's keys", name)
					}
				}
				if len(held) != 3 {
					t.Errorf("%s holds %d keys, want its period's 3", name, len(held))
				}
			}
		})
	}

	// Still one cluster: no member found failed after time enough for
	// failure detection, and a table still goes round. (A split does not
	// heal within the two seconds allowed.)
	time.Sleep(1500 * time.Millisecond)
	testutil.Eventually(t, 2*time.Second, "members still see each other alive after the attack", alive)
	ep := announce.Endpoint{VNI: 7, IP: netip.MustParseAddr("10.0.0.7"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 7}, Created: time.Now()}
	publish(b, announce.Table{Endpoints: []announce.Endpoint{ep}})
	testutil.Eventually(t, 10*time.Second, "C installs B's table after the attack", func() bool {
		tb, ok := recC.table(netip.MustParseAddr("127.0.0.112"))
		return ok && len(tb.Endpoints) == 1
	})
}
