package ipsec

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// probeSPI and probeMark tag the throwaway states Probe adds, so they can
// never be mistaken for (or collide with) a real SA.
const (
	probeSPI  = 0xFFFFFFFF
	probeMark = 0x7a5ec0de
)

// Probe asks the kernel whether it can do what encrypted networks need:
// ESP (CONFIG_INET_ESP, module esp4) and AES-GCM (rfc4106(gcm(aes)),
// CONFIG_CRYPTO_GCM). It adds a state that can match no traffic and
// removes it at once. The error names every missing feature.
func Probe() error {
	esp, gcm := ProbeFeatures()
	var missing []string
	if esp != nil {
		missing = append(missing, fmt.Sprintf("IPsec ESP (CONFIG_INET_ESP, module esp4: %v)", esp))
	}
	if gcm != nil {
		missing = append(missing, fmt.Sprintf("AES-GCM for ESP (rfc4106(gcm(aes)), CONFIG_CRYPTO_GCM: %v)", gcm))
	}
	if len(missing) > 0 {
		return fmt.Errorf("this kernel lacks %s", strings.Join(missing, " and "))
	}
	return nil
}

// ProbeFeatures is Probe's answer feature by feature: why ESP, and why
// AES-GCM for ESP, cannot be used (nil: it can).
func ProbeFeatures() (esp, gcm error) {
	gcm = probeState(&netlink.XfrmStateAlgo{Name: "rfc4106(gcm(aes))", Key: make([]byte, KeyMaterial), ICVLen: ICVBits}, nil, nil)
	esp = gcm
	if gcm != nil {
		// The kernel checks the AEAD before the protocol: test ESP alone,
		// with algorithms every kernel has, to tell which is missing.
		esp = probeState(nil, &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: make([]byte, 16)},
			&netlink.XfrmStateAlgo{Name: "hmac(sha256)", Key: make([]byte, 32), TruncateLen: 128})
	}
	// GCM is missing when its probe failed for another reason than ESP's
	// absence (or failed though ESP is there).
	if gcm != nil && esp != nil && errors.Is(gcm, unix.EPROTONOSUPPORT) {
		gcm = nil
	}
	return esp, gcm
}

func probeState(aead, crypt, auth *netlink.XfrmStateAlgo) error {
	st := &netlink.XfrmState{
		Src: net.IPv4(127, 0, 0, 1), Dst: net.IPv4(127, 0, 0, 1),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TRANSPORT, Spi: probeSPI,
		Mark: &netlink.XfrmMark{Value: probeMark, Mask: 0xFFFFFFFF},
		Aead: aead, Crypt: crypt, Auth: auth,
	}
	if err := netlink.XfrmStateAdd(st); err != nil {
		return err
	}
	return netlink.XfrmStateDel(st)
}
