package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// pcap decoding: the classic file format (tcpdump -w), little or big
// endian, microsecond or nanosecond timestamps.

type pcapRecord struct {
	ts      time.Time
	origLen int
	data    []byte
}

const linktypeLinuxSLL2 = 276

func readPcap(b []byte) ([]pcapRecord, error) {
	if len(b) < 24 {
		return nil, nil // the header is still being written
	}
	var bo binary.ByteOrder
	nano := false
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4:
		bo = binary.LittleEndian
	case 0xa1b23c4d:
		bo, nano = binary.LittleEndian, true
	case 0xd4c3b2a1:
		bo = binary.BigEndian
	case 0x4d3cb2a1:
		bo, nano = binary.BigEndian, true
	default:
		return nil, errors.New("not a pcap stream (bad magic)")
	}
	if lt := bo.Uint32(b[20:24]) & 0x0fffffff; lt != linktypeLinuxSLL2 {
		return nil, fmt.Errorf("link type %d, want LINUX_SLL2 (%d)", lt, linktypeLinuxSLL2)
	}
	var recs []pcapRecord
	for off := 24; off+16 <= len(b); {
		sec, frac := bo.Uint32(b[off:]), bo.Uint32(b[off+4:])
		incl, orig := int(bo.Uint32(b[off+8:])), int(bo.Uint32(b[off+12:]))
		if incl > 1<<20 {
			return recs, fmt.Errorf("corrupt record at offset %d (length %d)", off, incl)
		}
		if off+16+incl > len(b) {
			break // still being written
		}
		ns := int64(frac) * 1000
		if nano {
			ns = int64(frac)
		}
		recs = append(recs, pcapRecord{ts: time.Unix(int64(sec), ns), origLen: orig, data: b[off+16 : off+16+incl]})
		off += 16 + incl
	}
	return recs, nil
}

// decodeSLL2 decodes a Linux cooked v2 record: protocol, interface index,
// packet type, then the network header.
func decodeSLL2(r pcapRecord) Packet {
	p := Packet{Time: r.ts, Len: r.origLen - 20}
	b := r.data
	if len(b) < 20 {
		return p
	}
	p.EtherType = binary.BigEndian.Uint16(b[0:2])
	p.ifindex = int(binary.BigEndian.Uint32(b[4:8]))
	p.Out = b[10] == 4 // PACKET_OUTGOING
	decodeL3(&p, b[20:])
	return p
}

// decodeL3 fills in the IP and transport fields from a network header.
func decodeL3(p *Packet, b []byte) {
	var l4 []byte
	switch p.EtherType {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.Proto = b[9]
		if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 {
			return // a later fragment: no transport header
		}
		l4 = b[ihl:]
	case 0x86dd:
		if len(b) < 40 || b[0]>>4 != 6 {
			return
		}
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.Proto = b[6] // extension headers are not followed
		l4 = b[40:]
	default:
		return
	}
	switch p.Proto {
	case ProtoUDP, ProtoTCP:
		if len(l4) >= 4 {
			p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
			p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		}
		if p.Proto == ProtoUDP && len(l4) >= 8 {
			p.Payload = l4[8:]
			return
		}
	case ProtoESP:
		if len(l4) >= 8 {
			p.SPI = binary.BigEndian.Uint32(l4[0:4])
			p.Seq = binary.BigEndian.Uint32(l4[4:8])
		}
	}
	p.Payload = l4
}
