package gossip

import (
	"bytes"
	"crypto/ecdh"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz from the seed makers")

// The fuzz targets run each side of a version 2 pull against whatever the
// other side sends. Their seeds, in testdata/fuzz, are a valid exchange,
// the old version's bytes, truncations, bad counts and oversized lengths;
// the valid ones are made with these fixed nonces and secret (sealing is
// deterministic for given nonces), and TestFuzzCorpus keeps the files
// equal to what fuzzServerSeeds and fuzzClientSeeds make.
var (
	fuzzSecret      = []byte("0123456789abcdef0123456789abcdef")
	fuzzServerNonce = bytes.Repeat([]byte{0x5e}, nonceSize)
	fuzzClientNonce = bytes.Repeat([]byte{0xc1}, nonceSize)
)

// script is one side's view of a connection: it reads what the other side
// sent (the fuzz input) and records what it writes.
type script struct {
	in   *bytes.Reader
	out  bytes.Buffer
	read int
}

func (s *script) Read(p []byte) (int, error) {
	n, err := s.in.Read(p)
	s.read += n
	return n, err
}

func (s *script) Write(p []byte) (int, error) { return s.out.Write(p) }

// FuzzServePull: whatever a client sends, the server writes nothing but
// its greeting unless the client proved the secret, reads no more than a
// proof's worth before that, and never panics.
func FuzzServePull(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &script{in: bytes.NewReader(data)}
		authed := false
		err := servePull(s, [][]byte{fuzzSecret}, fuzzServerNonce, func() []byte { return []byte("table") }, func() { authed = true }, nil)
		// An identity block is read only once the secret is proved.
		if max := nonceSize + 1 + maxProofs*macSize + ephemeralSize; s.read > max && !(authed && s.read <= max+4+maxIdentity) {
			t.Fatalf("the server read %d bytes of the client's (authenticated %v)", s.read, authed)
		}
		if err != nil {
			// Once the secret is proved, only the identity block that
			// follows it, or the client's ephemeral key, may still fail.
			if authed && !strings.Contains(err.Error(), "identity") && !strings.Contains(err.Error(), "ephemeral") {
				t.Fatalf("authenticated, then failed: %v", err)
			}
			if !bytes.Equal(s.out.Bytes(), hello(fuzzServerNonce)) {
				t.Fatalf("a refused client got %d bytes beyond the greeting", s.out.Len()-len(hello(fuzzServerNonce)))
			}
			return
		}
		p, _, perr := readProof(bytes.NewReader(data))
		if !authed || perr != nil {
			t.Fatalf("served a table without a proof (authenticated %v, %v)", authed, perr)
		}
		if _, err := p.check([][]byte{fuzzSecret}, fuzzServerNonce); err != nil {
			t.Fatalf("served a table for a proof that does not check: %v", err)
		}
	})
}

// FuzzClientPull: whatever a server answers, the client writes its magic
// and one proof, returns a table only if it authenticates, and never
// panics nor reads a table longer than the bound.
func FuzzClientPull(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &script{in: bytes.NewReader(data)}
		// With ephemeral keys no answer made without the client's fresh
		// private key authenticates: every one is refused, within the
		// same bounds plus the server's public key.
		se := &script{in: bytes.NewReader(data)}
		if plain, err := clientPull(se, [][]byte{fuzzSecret}, fuzzClientNonce, nil, true); err == nil || plain != nil {
			t.Fatalf("an ephemeral pull took an answer made without its key: %d bytes", len(plain))
		}
		if se.read > 1+nonceSize+ephemeralSize+4+maxSealed || se.out.Len() > 1+nonceSize+1+maxProofs*macSize+ephemeralSize {
			t.Fatalf("the ephemeral client read %d bytes and wrote %d", se.read, se.out.Len())
		}
		plain, err := clientPull(s, [][]byte{fuzzSecret}, fuzzClientNonce, nil, false)
		if s.read > 1+nonceSize+4+maxSealed {
			t.Fatalf("the client read %d bytes", s.read)
		}
		if out := s.out.Bytes(); len(out) == 0 || out[0] != pullMagicV2 || len(out) > 1+nonceSize+1+maxProofs*macSize {
			t.Fatalf("the client wrote %d bytes", len(out))
		}
		if err != nil {
			if plain != nil {
				t.Fatalf("a failed pull returned %d bytes", len(plain))
			}
			return
		}
		// Success means the server's answer opened under the secret.
		sn, _ := readHello(bytes.NewReader(data))
		r := bytes.NewReader(data[1+nonceSize:])
		sealed, serr := readSealed(r)
		if serr != nil {
			t.Fatal(serr)
		}
		if _, err := openTable([][]byte{fuzzSecret}, fuzzClientNonce, sn, sealed); err != nil {
			t.Fatalf("a table that does not authenticate was returned: %v", err)
		}
	})
}

// fuzzServerSeeds are clients' messages: a valid proof, a stranger's, a
// replayed one, version 1's request, bad counts, truncations.
func fuzzServerSeeds() map[string][]byte {
	valid, _ := makeProof([][]byte{fuzzSecret}, fuzzServerNonce, fuzzClientNonce)
	two, _ := makeProof([][]byte{bytes.Repeat([]byte{7}, 32), fuzzSecret}, fuzzServerNonce, fuzzClientNonce)
	stranger, _ := makeProof([][]byte{bytes.Repeat([]byte{7}, 32)}, fuzzServerNonce, fuzzClientNonce)
	replay, _ := makeProof([][]byte{fuzzSecret}, bytes.Repeat([]byte{1}, nonceSize), fuzzClientNonce)
	v := valid.encode()
	withIdentity := valid
	withIdentity.identity = bytes.Repeat([]byte{0x42}, 300)
	hugeIdentity := append(bytes.Clone(v), 0xff, 0xff, 0xff, 0xff)
	hugeIdentity[nonceSize] |= identityFlag
	withEphemeral := valid
	withEphemeral.ephemeral = fuzzEphemeral()
	lowOrder := valid
	lowOrder.ephemeral = make([]byte, ephemeralSize)
	zeroCount := append(bytes.Clone(v[:nonceSize]), 0)
	hugeCount := append(bytes.Clone(v[:nonceSize]), 255)
	return map[string][]byte{
		"valid-proof": v, "two-secrets": two.encode(), "stranger-proof": stranger.encode(), "replayed-proof": replay.encode(),
		"truncated": v[:nonceSize+5], "zero-count": zeroCount, "huge-count": hugeCount,
		"v1-request": append([]byte{pullMagicV1}, fuzzClientNonce...), "empty": {},
		"valid-proof-with-identity": withIdentity.encode(), "identity-over-the-bound": hugeIdentity,
		"valid-proof-ephemeral": withEphemeral.encode(), "ephemeral-low-order": lowOrder.encode(),
		"ephemeral-truncated": withEphemeral.encode()[:nonceSize+1+macSize+10],
	}
}

// fuzzEphemeral is a fixed client's ephemeral X25519 public key (the
// seeds are files: they must not change between runs).
func fuzzEphemeral() []byte {
	k, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{0x0e}, 32))
	if err != nil {
		panic(err)
	}
	return k.PublicKey().Bytes()
}

// fuzzClientSeeds are servers' answers: a valid table, an old server's
// error message, a greeting alone, a length over the bound, a damaged seal.
func fuzzClientSeeds() map[string][]byte {
	aead, _ := sessionAEAD(fuzzSecret, fuzzClientNonce, fuzzServerNonce)
	valid := append(hello(fuzzServerNonce), sealedFrame(seal(aead, []byte(`{"host":"198.18.0.1"}`)))...)
	damaged := bytes.Clone(valid)
	damaged[len(damaged)-1] ^= 1
	huge := append(hello(fuzzServerNonce), 0xff, 0xff, 0xff, 0xff)
	// A server's ephemeral answer: its public key, then a sealed table.
	withKey := append(append(hello(fuzzServerNonce), fuzzEphemeral()...), sealedFrame(seal(aead, []byte(`{"host":"198.18.0.1"}`)))...)
	return map[string][]byte{
		"valid-table": valid, "damaged-seal": damaged, "huge-length": huge, "greeting-only": hello(fuzzServerNonce),
		"ephemeral-answer": withKey,
		"old-server-error": {encryptMsg, 0, 0, 0, 40, 1}, "empty": {},
	}
}

// TestFuzzCorpus: the seed files are what the seed makers make, so that a
// change of the protocol cannot leave the valid seeds quietly invalid
// (-update-corpus rewrites them).
func TestFuzzCorpus(t *testing.T) {
	for name, seeds := range map[string]map[string][]byte{"FuzzServePull": fuzzServerSeeds(), "FuzzClientPull": fuzzClientSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		for file, seed := range seeds {
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(seed)))
			path := filepath.Join(dir, file)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != want {
				t.Errorf("%s is not the seed the test makes (%v); run go test -run TestFuzzCorpus -update-corpus", path, err)
			}
		}
	}
}
