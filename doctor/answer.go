package doctor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
)

// Query is the name of the cluster query the doctor asks.
const Query = "vxsec-doctor"

// Kernel features a member may lack (Answer.Lacks).
const (
	LackESP      = "esp"
	LackGCM      = "gcm"
	LackVXLAN    = "vxlan"
	LackNftables = "nftables"
)

// Answer is what a member tells the doctor about itself. Its JSON keys are
// short: an answer travels in one serf query response (gossip.MaxAnswer).
type Answer struct {
	// Clock is the member's clock when it answered, in Unix milliseconds.
	Clock int64 `json:"t"`
	// Lacks are the kernel features it lacks (Lack*).
	Lacks []string `json:"k,omitempty"`
	// SwarmUnseen: its engine is a swarm node, but the plugin does not see
	// the swarm directory.
	SwarmUnseen bool `json:"w,omitempty"`
	// Encap is its VXSEC_ESP_ENCAP (auto, esp, udp).
	Encap string `json:"e,omitempty"`
	// Encrypted: an encrypted network exists on it.
	Encrypted bool `json:"x,omitempty"`
	// Recording is how long, in seconds, its firewall has recorded path
	// probes; 0 when it records none (it has no vxsec network).
	Recording int `json:"r,omitempty"`
	// MTU is the underlay MTU its full-size probes fill.
	MTU int `json:"u,omitempty"`
	// Small, Full and ESP are the members whose small and full-size path
	// probes, and native ESP, reached it lately (ESP only while an
	// encrypted network exists on it).
	Small Addrs `json:"s,omitempty"`
	Full  Addrs `json:"f,omitempty"`
	ESP   Addrs `json:"p,omitempty"`
	// Cut counts the addresses left out of Small, Full and ESP, in that
	// order, for the answer to fit (Encode); nil when none were.
	Cut []int `json:"c,omitempty"`
}

// cut is how many addresses were left out of list i (0 Small, 1 Full, 2 ESP).
func (a Answer) cut(i int) int {
	if i < len(a.Cut) {
		return a.Cut[i]
	}
	return 0
}

// Encode is a's JSON, at most limit bytes: while it is longer, an address
// is left out of the longest list and counted in Cut, so that the doctor
// knows which lists are whole. It fails only if no list is left to shorten.
func Encode(a Answer, limit int) ([]byte, error) {
	lists := []*Addrs{&a.Small, &a.Full, &a.ESP}
	for {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("encoding the doctor's answer: %w", err)
		}
		if len(b) <= limit {
			return b, nil
		}
		// An address takes at most maxAddrText bytes of the encoding:
		// leaving out this many never leaves out more than needed.
		for k := max(1, (len(b)-limit)/maxAddrText); k > 0; k-- {
			longest := 0
			for i, l := range lists {
				if len(*l) > len(*lists[longest]) {
					longest = i
				}
			}
			l := lists[longest]
			if len(*l) == 0 {
				return nil, fmt.Errorf("the doctor's answer is %d bytes with no address in it, over the bound of %d", len(b), limit)
			}
			*l = (*l)[:len(*l)-1]
			if a.Cut == nil {
				a.Cut = make([]int, len(lists))
			}
			a.Cut[longest]++
		}
	}
}

// maxAddrText is the most an address adds to an encoded answer: 17 bytes
// (length and IPv6 address) in base64, rounded up.
const maxAddrText = 23

// Decode reads an answer Encode made.
func Decode(b []byte) (Answer, error) {
	var a Answer
	if err := json.Unmarshal(b, &a); err != nil {
		return Answer{}, fmt.Errorf("decoding a doctor's answer: %w", err)
	}
	return a, nil
}

// Addrs are addresses encoded compactly: base64 of each address's length
// (4 or 16) and bytes.
type Addrs []netip.Addr

// MarshalJSON encodes the addresses as one base64 string.
func (as Addrs) MarshalJSON() ([]byte, error) {
	var raw []byte
	for _, a := range as {
		b := a.Unmap().AsSlice()
		raw = append(append(raw, byte(len(b))), b...)
	}
	return json.Marshal(base64.RawStdEncoding.EncodeToString(raw))
}

// UnmarshalJSON decodes what MarshalJSON encoded.
func (as *Addrs) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	raw, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("addresses: %w", err)
	}
	var out Addrs
	for len(raw) > 0 {
		n := int(raw[0])
		if (n != 4 && n != 16) || len(raw) < 1+n {
			return errors.New("addresses: a truncated or malformed address")
		}
		a, _ := netip.AddrFromSlice(raw[1 : 1+n])
		out = append(out, a)
		raw = raw[1+n:]
	}
	*as = out
	return nil
}
