package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"
)

// chainCacheSize bounds the chains remembered: a cluster's hosts, each with
// a current and a renewed certificate, and room to spare. Past it the cache
// starts over, which costs only verifications.
const chainCacheSize = 4096

// chainCache remembers chains that verified to the cluster's CA, and until
// when the verification holds: every member proves the same chain in every
// table it serves and every pull it makes, and verifying a chain (parsing
// and an ECDSA verification per link) was the largest share of a member's
// work in a 50-host benchmark. What a chain signs is still verified every
// time, and revocation is checked on every use.
type chainCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]cachedChain
}

// cachedChain is a verified chain's leaf and the times between which every
// certificate of the chain is valid.
type cachedChain struct {
	leaf      *x509.Certificate
	notBefore time.Time
	notAfter  time.Time
}

func newChainCache() *chainCache {
	return &chainCache{entries: map[[sha256.Size]byte]cachedChain{}}
}

// chainKey names a chain by all of its certificates, each length-prefixed
// so that no two chains share a key.
func chainKey(chain [][]byte) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, der := range chain {
		binary.BigEndian.PutUint32(n[:], uint32(len(der)))
		h.Write(n[:])
		h.Write(der)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// get returns the leaf of chain if it verified before and is valid at now.
func (c *chainCache) get(chain [][]byte, now time.Time) (*x509.Certificate, bool) {
	if c == nil {
		return nil, false
	}
	k := chainKey(chain)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return nil, false
	}
	if now.Before(e.notBefore) || now.After(e.notAfter) {
		delete(c.entries, k)
		return nil, false
	}
	return e.leaf, true
}

// put remembers that chain verified, as verified: the chain to a root the
// verification built, whose validity bounds the entry's.
func (c *chainCache) put(chain [][]byte, verified []*x509.Certificate) {
	if c == nil || len(verified) == 0 {
		return
	}
	e := cachedChain{leaf: verified[0], notBefore: verified[0].NotBefore, notAfter: verified[0].NotAfter}
	for _, cert := range verified[1:] {
		if cert.NotBefore.After(e.notBefore) {
			e.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(e.notAfter) {
			e.notAfter = cert.NotAfter
		}
	}
	k := chainKey(chain)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= chainCacheSize {
		clear(c.entries)
	}
	c.entries[k] = e
}
