package announce

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// A delta is a host's table given as the change from its previous
// version, when only endpoints, networks and IPsec state changed
// (containers started and stopped, networks made and removed, keys
// rotated): small enough for one UDP packet, so receivers that hold the
// previous version need no pull. Endpoints travel as edits; the networks
// and the IPsec part, when they changed, whole. A new revocation list is
// still pulled: the pull carries the list. It names the SHA-256 of the new table's
// encoding, and a receiver installs the result only if its own encoding
// of it hashes the same, so a delta can never make a table the author did
// not publish; anything else (a gap, a mismatch) is left to the pull.
//
//	deltaMagic (4)
//	host: length (1: 4 or 16), address
//	previous version's epoch (8, big endian; the next has the same),
//	previous seq (uvarint), next seq (uvarint)
//	SHA-256 of the next table's encoding (32)
//	removed: count (uvarint), then each index into the previous
//	  endpoints, ascending (uvarint)
//	added: count (uvarint), then each its index among the next
//	  endpoints, ascending (uvarint), VNI (uvarint), IP (length (1),
//	  bytes), MAC (length (1), bytes), created (length (1), RFC 3339 text)
//	IPsec: length (uvarint; 0: unchanged), then the JSON encoding of the
//	  next table's IPsec part, which replaces the previous one whole
//	networks: length (uvarint; 0: unchanged), then the JSON encoding of
//	  the next table's networks, which replace the previous ones whole
//	--- the body ends here: the signature covers SignedContext + body
//	signature: length (uvarint, 0: none), bytes
//
// The body opens with bytes no JSON table opens with, so the author's
// signature of a delta never verifies as a signature of a table, nor the
// other way round.
const (
	deltaMagic = "\x00VXD"
	// MaxDeltaBytes bounds a delta's wire form: it travels in one UDP
	// packet, which with its seal (30 bytes) and IPv6 and UDP headers
	// fits a 1500-byte MTU.
	MaxDeltaBytes = 1400
)

// Delta is the change from a host's table Prev to its table Next.
type Delta struct {
	Host       netip.Addr
	Prev, Next Version
	// Hash is the SHA-256 of the encoding of the table at Next.
	Hash [sha256.Size]byte
	// Removed are indices into Prev's endpoints, ascending.
	Removed []int
	// Added are the endpoints of Next that Prev lacks, at their index
	// among Next's endpoints, ascending.
	Added []Inserted
	// IPsec is the JSON encoding of Next's IPsec part when it differs
	// from Prev's; nil when it does not.
	IPsec []byte
	// Networks is the JSON encoding of Next's networks when they differ
	// from Prev's; nil when they do not.
	Networks []byte
	// Sig is the author's signature of SignedMessage(Body()); nil where
	// tables are not signed.
	Sig []byte
}

// Inserted is one endpoint a delta adds, at its place.
type Inserted struct {
	At       int
	Endpoint Endpoint
}

// Diff is the delta from prev to next, where next's encoding is nextRaw.
// It reports false when next differs from prev in more than its
// endpoints, networks, IPsec part and version's seq (that is pulled), or the
// delta would not fit MaxDeltaBytes with a signature of sigRoom bytes.
func Diff(prev, next Table, nextRaw []byte, sigRoom int) (Delta, bool) {
	if prev.Host != next.Host || prev.Version.Epoch != next.Version.Epoch || !prev.Version.Less(next.Version) {
		return Delta{}, false
	}
	if !sameButParts(prev, next) {
		return Delta{}, false
	}
	d := Delta{Host: next.Host, Prev: prev.Version, Next: next.Version, Hash: sha256.Sum256(nextRaw)}
	var ok bool
	if d.IPsec, ok = changed(prev.IPsec, next.IPsec); !ok {
		return Delta{}, false
	}
	if d.Networks, ok = changed(prev.Networks, next.Networks); !ok {
		return Delta{}, false
	}
	inNext := make(map[string]int, len(next.Endpoints))
	for _, ep := range next.Endpoints {
		inNext[endpointKey(ep)]++
	}
	kept := make([]Endpoint, 0, len(prev.Endpoints))
	for i, ep := range prev.Endpoints {
		k := endpointKey(ep)
		if inNext[k] > 0 {
			inNext[k]--
			kept = append(kept, ep)
			continue
		}
		d.Removed = append(d.Removed, i)
	}
	// What is kept must keep its order among the next endpoints (the
	// author sorts them, so it does); every other endpoint is added.
	k := 0
	for j, ep := range next.Endpoints {
		if k < len(kept) && endpointKey(kept[k]) == endpointKey(ep) {
			k++
			continue
		}
		d.Added = append(d.Added, Inserted{At: j, Endpoint: ep})
	}
	if k != len(kept) {
		return Delta{}, false
	}
	wire, err := EncodeDelta(d)
	if err != nil || len(wire)+binary.MaxVarintLen16+sigRoom > MaxDeltaBytes {
		return Delta{}, false
	}
	// The receiver's check, made by the author first, on the delta as a
	// receiver decodes it: one that would not rebuild next exactly is
	// not sent.
	back, _, err := DecodeDelta(wire)
	if err != nil {
		return Delta{}, false
	}
	if _, _, err := back.Install(prev); err != nil {
		return Delta{}, false
	}
	return d, true
}

// changed is next's JSON encoding when it differs from prev's, nil when
// it does not; false if either does not encode.
func changed[T any](prev, next T) ([]byte, bool) {
	was, err1 := json.Marshal(prev)
	now, err2 := json.Marshal(next)
	if err1 != nil || err2 != nil {
		return nil, false
	}
	if bytes.Equal(was, now) {
		return nil, true
	}
	return now, true
}

// sameButParts tells whether two tables differ in nothing but their
// endpoints, networks, IPsec part and version.
func sameButParts(a, b Table) bool {
	a.Endpoints, b.Endpoints = nil, nil
	a.Networks, b.Networks = nil, nil
	a.IPsec, b.IPsec = IPsec{}, IPsec{}
	a.Version, b.Version = Version{}, Version{}
	ra, err1 := Encode(a)
	rb, err2 := Encode(b)
	return err1 == nil && err2 == nil && bytes.Equal(ra, rb)
}

func endpointKey(ep Endpoint) string {
	created, _ := ep.Created.MarshalText()
	return strconv.FormatUint(uint64(ep.VNI), 10) + "|" + ep.IP.String() + "|" + string(ep.MAC) + "|" + string(created)
}

// Errors of Apply: the delta is not for the table held (a gap: pull), or
// does not rebuild the table it names (pull, and count it).
var (
	ErrDeltaBase     = errors.New("the delta is not from the version held")
	ErrDeltaMismatch = errors.New("the delta does not rebuild the table it names")
)

// Apply makes the table at d.Next from prev, the table at d.Prev. It does
// not check the hash; Install does.
func (d Delta) Apply(prev Table) (Table, error) {
	if prev.Host != d.Host || prev.Version != d.Prev || d.Prev.Epoch != d.Next.Epoch || !d.Prev.Less(d.Next) {
		return Table{}, fmt.Errorf("%w: it takes %s at %s to %s, and the table held is %s at %s", ErrDeltaBase, d.Host, d.Prev, d.Next, prev.Host, prev.Version)
	}
	n := len(prev.Endpoints) - len(d.Removed) + len(d.Added)
	if n < 0 || n > MaxEndpointsPerHost {
		return Table{}, fmt.Errorf("%w: %d endpoints", ErrDeltaMismatch, n)
	}
	kept := make([]Endpoint, 0, len(prev.Endpoints))
	r := 0
	for i, ep := range prev.Endpoints {
		if r < len(d.Removed) && d.Removed[r] == i {
			r++
			continue
		}
		kept = append(kept, ep)
	}
	if r != len(d.Removed) {
		return Table{}, fmt.Errorf("%w: it removes endpoints the table does not have, or not in order", ErrDeltaMismatch)
	}
	out := make([]Endpoint, 0, n)
	a, k := 0, 0
	for j := range n {
		if a < len(d.Added) && d.Added[a].At == j {
			out = append(out, d.Added[a].Endpoint)
			a++
			continue
		}
		if k == len(kept) {
			return Table{}, fmt.Errorf("%w: it adds endpoints out of place", ErrDeltaMismatch)
		}
		out = append(out, kept[k])
		k++
	}
	if a != len(d.Added) {
		return Table{}, fmt.Errorf("%w: it adds endpoints out of place", ErrDeltaMismatch)
	}
	next := prev
	next.Version = d.Next
	next.Endpoints = out
	if d.IPsec != nil {
		var ip IPsec
		if err := json.Unmarshal(d.IPsec, &ip); err != nil {
			return Table{}, fmt.Errorf("%w: its IPsec part: %w", ErrDeltaMismatch, err)
		}
		next.IPsec = ip
	}
	if d.Networks != nil {
		var nets []Network
		if err := json.Unmarshal(d.Networks, &nets); err != nil {
			return Table{}, fmt.Errorf("%w: its networks: %w", ErrDeltaMismatch, err)
		}
		next.Networks = nets
	}
	return next, nil
}

// Install is Apply, with the check that the result's encoding is the one
// the delta names; it returns that encoding too.
func (d Delta) Install(prev Table) (Table, []byte, error) {
	next, err := d.Apply(prev)
	if err != nil {
		return Table{}, nil, err
	}
	raw, err := Encode(next)
	if err != nil {
		return Table{}, nil, err
	}
	if sha256.Sum256(raw) != d.Hash {
		return Table{}, nil, fmt.Errorf("%w: %s at %s", ErrDeltaMismatch, d.Host, d.Next)
	}
	if err := Check(next, len(raw)); err != nil {
		return Table{}, nil, err
	}
	return next, raw, nil
}

// Body is what a delta's signature covers (after SignedContext).
func (d Delta) Body() ([]byte, error) {
	if !d.Host.IsValid() || d.Host.Zone() != "" {
		return nil, errors.New("a delta names a host address")
	}
	out := append([]byte(deltaMagic), byte(d.Host.BitLen()/8))
	out = append(out, d.Host.AsSlice()...)
	out = binary.BigEndian.AppendUint64(out, uint64(d.Prev.Epoch))
	out = binary.AppendUvarint(out, d.Prev.Seq)
	out = binary.AppendUvarint(out, d.Next.Seq)
	out = append(out, d.Hash[:]...)
	out = binary.AppendUvarint(out, uint64(len(d.Removed)))
	for _, i := range d.Removed {
		out = binary.AppendUvarint(out, uint64(i))
	}
	out = binary.AppendUvarint(out, uint64(len(d.Added)))
	for _, in := range d.Added {
		created, err := in.Endpoint.Created.MarshalText()
		if err != nil {
			return nil, fmt.Errorf("an endpoint's creation time: %w", err)
		}
		ip := in.Endpoint.IP.AsSlice()
		if len(ip) == 0 || in.Endpoint.IP.Zone() != "" || len(in.Endpoint.MAC) > 255 || len(created) > 255 {
			return nil, errors.New("an endpoint of a delta has an address, a MAC of at most 255 bytes and a time")
		}
		out = binary.AppendUvarint(out, uint64(in.At))
		out = binary.AppendUvarint(out, uint64(in.Endpoint.VNI))
		out = append(out, byte(len(ip)))
		out = append(out, ip...)
		out = append(out, byte(len(in.Endpoint.MAC)))
		out = append(out, in.Endpoint.MAC...)
		out = append(out, byte(len(created)))
		out = append(out, created...)
	}
	out = binary.AppendUvarint(out, uint64(len(d.IPsec)))
	out = append(out, d.IPsec...)
	out = binary.AppendUvarint(out, uint64(len(d.Networks)))
	return append(out, d.Networks...), nil
}

// EncodeDelta is a delta's wire form: its body, then its signature.
func EncodeDelta(d Delta) ([]byte, error) {
	body, err := d.Body()
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint(body, uint64(len(d.Sig)))
	out = append(out, d.Sig...)
	if len(out) > MaxDeltaBytes {
		return nil, fmt.Errorf("a delta of %d bytes: at most %d", len(out), MaxDeltaBytes)
	}
	return out, nil
}

// IsDelta tells a delta's wire form from anything else.
func IsDelta(b []byte) bool { return bytes.HasPrefix(b, []byte(deltaMagic)) }

var errShortDelta = errors.New("delta: cut short")

// DecodeDelta reads a delta's wire form, and returns the body its
// signature covers; the signature is not checked here.
func DecodeDelta(b []byte) (Delta, []byte, error) {
	if len(b) > MaxDeltaBytes {
		return Delta{}, nil, fmt.Errorf("a delta of %d bytes: at most %d", len(b), MaxDeltaBytes)
	}
	if !IsDelta(b) {
		return Delta{}, nil, errors.New("delta: no delta's header")
	}
	r := deltaReader{b: b, off: len(deltaMagic)}
	var d Delta
	host, ok := netip.AddrFromSlice(r.bytes(r.byte()))
	if !ok || r.err != nil {
		return Delta{}, nil, errors.New("delta: no host address")
	}
	d.Host = host
	epoch := int64(r.uint64())
	d.Prev = Version{Epoch: epoch, Seq: r.uvarint()}
	d.Next = Version{Epoch: epoch, Seq: r.uvarint()}
	copy(d.Hash[:], r.bytes(sha256.Size))
	// Every index and endpoint takes at least a byte: a count larger
	// than what is left is cut short, and allocates nothing.
	nr := r.count()
	for range nr {
		d.Removed = append(d.Removed, r.index())
	}
	na := r.count()
	for range na {
		var in Inserted
		in.At = r.index()
		vni := r.uvarint()
		if vni > 1<<24 {
			r.fail(fmt.Errorf("delta: VNI %d", vni))
		}
		in.Endpoint.VNI = uint32(vni)
		ip, ok := netip.AddrFromSlice(r.bytes(r.byte()))
		if !ok && r.err == nil {
			r.fail(errors.New("delta: an endpoint without an address"))
		}
		in.Endpoint.IP = ip
		if mac := r.bytes(r.byte()); len(mac) > 0 {
			in.Endpoint.MAC = net.HardwareAddr(bytes.Clone(mac))
		}
		var created time.Time
		text := r.bytes(r.byte())
		if err := created.UnmarshalText(text); err != nil && r.err == nil {
			r.fail(fmt.Errorf("delta: an endpoint's creation time: %w", err))
		}
		// One wire form per delta: the time as the author's encoding
		// writes it, nothing a parser merely tolerates.
		if again, _ := created.MarshalText(); r.err == nil && !bytes.Equal(again, text) {
			r.fail(fmt.Errorf("delta: creation time %q is not in RFC 3339 form", text))
		}
		in.Endpoint.Created = created
		d.Added = append(d.Added, in)
	}
	if ip := r.bytes(r.count()); len(ip) > 0 {
		d.IPsec = bytes.Clone(ip)
	}
	if nets := r.bytes(r.count()); len(nets) > 0 {
		d.Networks = bytes.Clone(nets)
	}
	body := b[:r.off]
	if sig := r.bytes(int(r.count())); len(sig) > 0 {
		d.Sig = bytes.Clone(sig)
	}
	if r.err != nil {
		return Delta{}, nil, r.err
	}
	if r.off != len(b) {
		return Delta{}, nil, errors.New("delta: bytes after the signature")
	}
	if !ascending(d.Removed) || !ascending(func() []int {
		at := make([]int, len(d.Added))
		for i, in := range d.Added {
			at[i] = in.At
		}
		return at
	}()) {
		return Delta{}, nil, errors.New("delta: indices out of order")
	}
	if !d.Prev.Less(d.Next) {
		return Delta{}, nil, fmt.Errorf("delta: from %s to %s goes back", d.Prev, d.Next)
	}
	return d, body, nil
}

func ascending(s []int) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}

// deltaReader reads a delta's fields; the first failure sticks, and
// every later read returns zero.
type deltaReader struct {
	b   []byte
	off int
	err error
}

func (r *deltaReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *deltaReader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b)-r.off {
		r.fail(errShortDelta)
		return nil
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *deltaReader) byte() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *deltaReader) uint64() uint64 {
	b := r.bytes(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (r *deltaReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 || n != len(binary.AppendUvarint(nil, v)) {
		r.fail(errShortDelta)
		return 0
	}
	r.off += n
	return v
}

// count reads a count of items of at least a byte each.
func (r *deltaReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)-r.off) {
		r.fail(errShortDelta)
		return 0
	}
	return int(n)
}

// index reads an endpoint index within the bounds of a table.
func (r *deltaReader) index() int {
	i := r.uvarint()
	if i >= MaxEndpointsPerHost {
		r.fail(fmt.Errorf("delta: endpoint index %d over the limit of %d", i, MaxEndpointsPerHost))
		return 0
	}
	return int(i)
}
