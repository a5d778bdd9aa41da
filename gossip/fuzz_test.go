package gossip

// Fuzz targets of what a host takes from its peers: the sealed table a
// pull opens. (The pull's framing has its own fuzz test with the protocol;
// the table and its version tag are package announce's.)
// `go test` runs the seeds as regression tests; `make fuzz` fuzzes.

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/vxsec/vxsec/announce"
)

// FuzzOpen: a sealed table opens only if it is exactly what the session's
// key sealed (open never returns a plaintext the key did not seal, and
// never anything but errUnauthentic); anything sealed opens to itself, and
// no longer opens once a byte changes or under another session's nonces.
func FuzzOpen(f *testing.F) {
	secret := bytes.Repeat([]byte{0x5e}, 32)
	cn, sn := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	aead, err := sessionAEAD(secret, cn, sn)
	if err != nil {
		f.Fatal(err)
	}
	full := []byte(`{"host":"198.18.0.2","version":{"epoch":1714557600123456789,"seq":42},"endpoints":[{"vni":100,"ip":"10.50.1.2","mac":"AkIKMgEC","created":"2024-05-01T10:00:02Z"}]}`)
	f.Add(secret, cn, sn, seal(aead, full), uint16(0))
	f.Add(secret, cn, sn, seal(aead, []byte(`{"host":"198.18.0.9","version":{"epoch":1,"seq":1}}`)), uint16(40))
	f.Add([]byte{}, cn, sn, seal(aead, full), uint16(3))
	f.Add(secret, cn, sn, []byte("not sealed at all"), uint16(1))
	f.Fuzz(func(t *testing.T, secret, cn, sn, sealed []byte, flip uint16) {
		aead, err := sessionAEAD(secret, cn, sn)
		if err != nil {
			t.Fatalf("sessionAEAD: %v", err)
		}
		plain, err := open(aead, sealed)
		if err != nil {
			if !errors.Is(err, errUnauthentic) {
				t.Fatalf("open: %v, want errUnauthentic", err)
			}
		} else {
			if !bytes.Equal(seal(aead, plain), sealed) {
				t.Fatalf("open accepted %x, which the session's key did not seal", sealed)
			}
			var tbl announce.Table
			_ = json.Unmarshal(plain, &tbl) // what a pull does next; FuzzTable checks it
		}

		// Whatever the bytes, sealed they open to themselves, and only so.
		resealed := seal(aead, sealed)
		if got, err := open(aead, resealed); err != nil || !bytes.Equal(got, sealed) {
			t.Fatalf("open(seal(%x)) = %x, %v", sealed, got, err)
		}
		damaged := bytes.Clone(resealed)
		damaged[int(flip)%len(damaged)] ^= 1 << (flip % 8)
		if _, err := open(aead, damaged); !errors.Is(err, errUnauthentic) {
			t.Fatalf("a damaged table opened (byte %d): %v", int(flip)%len(damaged), err)
		}
		// Another server nonce of the same length, as nonces always are:
		// the salt is the plain concatenation of both, and HMAC pads a
		// short key with zeros, so a nonce one zero byte longer is no
		// other session.
		other := bytes.Clone(sn)
		if len(other) == 0 {
			other = []byte{1}
		} else {
			other[0] ^= 1
		}
		otherAEAD, err := sessionAEAD(secret, cn, other)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := open(otherAEAD, resealed); !errors.Is(err, errUnauthentic) {
			t.Fatal("a table sealed for one session opened in another")
		}
	})
}
