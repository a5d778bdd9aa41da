package ipsec

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
)

// SPIs below 256 are reserved (RFC 4303); vxsec also keeps the top one.
const (
	minSPI = 256
	maxSPI = 0xFFFFFFFE
)

// AllocSPI picks an inbound SPI that inUse does not report: the receiver
// chooses, and announces, the SPI of every SA it receives on, so no two
// pairs or epochs on a host ever share one. Random rather than counted so
// that a restart, which forgets the counter, cannot replay old SPIs.
func AllocSPI(inUse func(uint32) bool) (uint32, error) {
	var b [4]byte
	for i := 0; i < 64; i++ {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, err
		}
		spi := minSPI + binary.BigEndian.Uint32(b[:])%(maxSPI-minSPI+1)
		if !inUse(spi) {
			return spi, nil
		}
	}
	return 0, errors.New("no free SPI found")
}
