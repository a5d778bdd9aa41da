package firewall

import (
	"net/netip"
	"testing"
)

// BenchmarkApplyUnchanged is the firewall's part of every Join: Apply with
// the state the kernel already holds (50 members), which reads the tables
// and the member sets back and changes nothing. Needs root (a namespace of
// its own).
func BenchmarkApplyUnchanged(b *testing.B) {
	var members []netip.Addr
	for i := 1; i <= 50; i++ {
		members = append(members, netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}))
	}
	s := State{Active: true, DataPorts: []uint16{4800, 4801}, SecurePorts: []uint16{4801}, Members: members}
	inNewNetns(b, func() {
		f := New()
		if err := f.Apply(s); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := f.Apply(s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
