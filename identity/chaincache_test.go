package identity

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestChainCache(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(24 * time.Hour)}
	// The CA expires before the leaf: the chain holds until the CA does.
	ca := &x509.Certificate{NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(12 * time.Hour)}
	chain := [][]byte{{1, 2}, {3}}
	for _, tc := range []struct {
		name  string
		chain [][]byte
		at    time.Time
		want  bool
	}{
		{"within every certificate's validity", chain, t0.Add(time.Hour), true},
		{"before the leaf is valid", chain, t0.Add(-time.Minute), false},
		{"after the CA expired, the leaf still valid", chain, t0.Add(13 * time.Hour), false},
		{"the same bytes cut elsewhere", [][]byte{{1}, {2, 3}}, t0.Add(time.Hour), false},
		{"another chain", [][]byte{{1, 2}}, t0.Add(time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChainCache()
			c.put(chain, []*x509.Certificate{leaf, ca})
			got, ok := c.get(tc.chain, tc.at)
			if ok != tc.want || (ok && got != leaf) {
				t.Fatalf("get = %v, %v; want found %v", got, ok, tc.want)
			}
		})
	}
	t.Run("bounded", func(t *testing.T) {
		c := newChainCache()
		for i := 0; i <= chainCacheSize; i++ {
			c.put([][]byte{{byte(i), byte(i >> 8)}}, []*x509.Certificate{leaf})
		}
		if n := len(c.entries); n > chainCacheSize {
			t.Fatalf("%d entries, bound %d", n, chainCacheSize)
		}
	})
	t.Run("a verifier without a cache", func(t *testing.T) {
		var c *chainCache
		c.put(chain, []*x509.Certificate{leaf})
		if _, ok := c.get(chain, t0.Add(time.Hour)); ok {
			t.Fatal("a nil cache remembered a chain")
		}
	})
}
