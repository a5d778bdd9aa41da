package driver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vxsec/vxsec/announce"
	"github.com/vxsec/vxsec/firewall"
	"github.com/vxsec/vxsec/ipsec"
	"github.com/vxsec/vxsec/vxlan"
)

// fakeKernel is the data path, the member firewall and the IPsec keys in
// memory, with one ordered log of the calls the driver made. It keeps what
// the real components would program: the VXLAN devices (by VNI, each
// network's, with its MTU, port and remote entries), the endpoint links on
// them, the firewall's state and vxsec's xfrm state.
//
// It refuses what the real kernel refuses (an endpoint link without its
// network's device, remote entries on a missing device) and what would
// break a promise of the package comment: a device while the firewall
// does not cover its port, an encrypted network's device without the IPsec
// guard, the firewall or the guard removed while a device that needs them
// exists. A refusal returns an error and, when it is the driver's fault,
// records a violation, which the tests check after every step.
//
// Failures can be injected on the n-th call of a method (failOn), and
// EnsureNetwork can be held on a channel (holdEnsure) to keep the
// driver's operation lock busy.
//
// The keys are the one part that lives in the daemon's process: a restart
// (restartProcess) forgets that they were active, while the xfrm state
// they left stays in the kernel.
type fakeKernel struct {
	dataPort, encPort int

	mu      sync.Mutex
	devices map[uint32]*fakeDevice
	links   map[string]*fakeLink // by endpoint ID
	fw      firewall.State
	// nativeESP is what SetNativeESP was last told; espSeen what ESPSeen
	// answers.
	nativeESP, espSeen []netip.Addr
	// keysActive is the process's Keys being active; xfrm is vxsec's
	// xfrm state (the guard, SAs) being in the kernel.
	keysActive bool
	// due is what Due answers (setDue).
	due time.Time
	// holdDeletes, when set, holds every DeleteEndpoint until closed.
	holdDeletes chan struct{}
	xfrm        bool
	epoch       uint64

	calls      []string
	violations []string
	failures   []*fakeFailure
	// fired counts the injected failures that happened; creates counts
	// devices and links created.
	fired, creates int
	// entered and release hold the next EnsureNetwork (holdEnsure).
	entered, release chan struct{}
}

type fakeDevice struct {
	net   string
	vni   uint32
	mtu   int
	port  int
	peers map[netip.Addr]vxlan.Peer // by IP
}

type fakeLink struct {
	vni uint32
	mac string
}

type fakeFailure struct {
	method string
	// skip is how many calls of method pass before the failing one.
	skip int
	// partial: the call's effect happens, then the error is returned.
	partial bool
}

// errInjected is the error of an injected failure.
var errInjected = errors.New("injected failure")

func newFakeKernel(dataPort, encPort int) *fakeKernel {
	return &fakeKernel{dataPort: dataPort, encPort: encPort, devices: map[uint32]*fakeDevice{}, links: map[string]*fakeLink{}}
}

var (
	_ DataPath = (*fakeKernel)(nil)
	_ Firewall = (*fakeKernel)(nil)
	_ Keys     = (*fakeKernel)(nil)
)

// failOn makes the call of method after skip more calls of it fail.
func (k *fakeKernel) failOn(method string, skip int, partial bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failures = append(k.failures, &fakeFailure{method: method, skip: skip, partial: partial})
}

// clearFailures drops the failures not yet injected.
func (k *fakeKernel) clearFailures() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failures = nil
}

// failLocked says whether this call of method fails, and how.
func (k *fakeKernel) failLocked(method string) (fail, partial bool) {
	for i, f := range k.failures {
		if f.method != method {
			continue
		}
		if f.skip > 0 {
			f.skip--
			return false, false
		}
		k.failures = slices.Delete(k.failures, i, i+1)
		k.fired++
		return true, f.partial
	}
	return false, false
}

func (k *fakeKernel) logLocked(format string, args ...any) {
	k.calls = append(k.calls, fmt.Sprintf(format, args...))
}

// violateLocked records that the driver broke a promise, and returns the
// error the refused call gives.
func (k *fakeKernel) violateLocked(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	k.violations = append(k.violations, msg)
	return errors.New("fake kernel refused: " + msg)
}

// holdEnsure makes the next EnsureNetwork close the returned entered and
// wait until release is closed.
func (k *fakeKernel) holdEnsure() (entered, release chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.entered, k.release = make(chan struct{}), make(chan struct{})
	return k.entered, k.release
}

// restartProcess is the daemon's process ending: the kernel's state stays,
// the keys' knowledge of it goes.
func (k *fakeKernel) restartProcess() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keysActive = false
	k.logLocked("restart")
}

func (k *fakeKernel) portOf(n vxlan.Network) int {
	if n.Port != 0 {
		return n.Port
	}
	return k.dataPort
}

func (k *fakeKernel) encryptedDevice(d *fakeDevice) bool { return d.port == k.encPort }

// ensureLocked is EnsureNetwork's effect, with the promises it checks.
func (k *fakeKernel) ensureLocked(n vxlan.Network) error {
	port := k.portOf(n)
	encrypted := port == k.encPort
	if !k.fw.Active || !slices.Contains(k.fw.DataPorts, uint16(port)) ||
		(encrypted && !slices.Contains(k.fw.SecurePorts, uint16(port))) {
		return k.violateLocked("device vni%d of network %s (port %d) while the firewall is %s", n.VNI, n.ID, port, fwString(k.fw, k.dataPort, k.encPort))
	}
	if encrypted && !k.keysActive {
		return k.violateLocked("encrypted network %s's device vni%d while the IPsec keys are not active", n.ID, n.VNI)
	}
	if n.MTU < minContainerMTU {
		return fmt.Errorf("device vni%d: MTU %d refused", n.VNI, n.MTU)
	}
	if d, ok := k.devices[n.VNI]; ok && d.net == n.ID && d.port == port {
		d.mtu = n.MTU
		return nil
	}
	// Another network's device of this VNI, or one whose port changed, is
	// replaced (the links on it go with it).
	k.removeDeviceLocked(n.VNI)
	k.devices[n.VNI] = &fakeDevice{net: n.ID, vni: n.VNI, mtu: n.MTU, port: port, peers: map[netip.Addr]vxlan.Peer{}}
	k.creates++
	return nil
}

// removeDeviceLocked removes a device and, as the kernel does, the
// endpoint links on top of it.
func (k *fakeKernel) removeDeviceLocked(vni uint32) {
	if _, ok := k.devices[vni]; !ok {
		return
	}
	delete(k.devices, vni)
	for id, l := range k.links {
		if l.vni == vni {
			delete(k.links, id)
		}
	}
}

// EnsureNetwork implements DataPath.
func (k *fakeKernel) EnsureNetwork(n vxlan.Network) error {
	k.mu.Lock()
	k.logLocked("dp.EnsureNetwork(vni%d)", n.VNI)
	entered, release := k.entered, k.release
	k.entered, k.release = nil, nil
	k.mu.Unlock()
	if entered != nil {
		close(entered)
		<-release
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	fail, partial := k.failLocked("EnsureNetwork")
	if fail && !partial {
		return fmt.Errorf("fake EnsureNetwork vni%d: %w", n.VNI, errInjected)
	}
	if err := k.ensureLocked(n); err != nil {
		return err
	}
	if fail {
		return fmt.Errorf("fake EnsureNetwork vni%d (after creating it): %w", n.VNI, errInjected)
	}
	return nil
}

// DeleteNetwork implements DataPath: the device goes if it is the
// network's.
func (k *fakeKernel) DeleteNetwork(n vxlan.Network) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("dp.DeleteNetwork(vni%d)", n.VNI)
	fail, partial := k.failLocked("DeleteNetwork")
	if fail && !partial {
		return fmt.Errorf("fake DeleteNetwork vni%d: %w", n.VNI, errInjected)
	}
	if d, ok := k.devices[n.VNI]; ok && d.net == n.ID {
		k.removeDeviceLocked(n.VNI)
	}
	if fail {
		return fmt.Errorf("fake DeleteNetwork vni%d (after removing it): %w", n.VNI, errInjected)
	}
	return nil
}

// EnsureEndpoint implements DataPath. An existing link is kept, as the
// real one keeps a device of vxsec's with a parent.
func (k *fakeKernel) EnsureEndpoint(n vxlan.Network, ep vxlan.Endpoint) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("dp.EnsureEndpoint(%s on vni%d)", ep.ID, n.VNI)
	name := vxlan.EndpointLinkName(ep.ID)
	fail, partial := k.failLocked("EnsureEndpoint")
	if fail && !partial {
		return "", fmt.Errorf("fake EnsureEndpoint %s: %w", ep.ID, errInjected)
	}
	if _, ok := k.links[ep.ID]; !ok {
		if d, ok := k.devices[n.VNI]; !ok || d.net != n.ID {
			return "", k.violateLocked("endpoint link %s of network %s, whose device vni%d does not exist", ep.ID, n.ID, n.VNI)
		}
		k.links[ep.ID] = &fakeLink{vni: n.VNI, mac: ep.MAC.String()}
		k.creates++
	}
	if fail {
		return "", fmt.Errorf("fake EnsureEndpoint %s (after creating it): %w", ep.ID, errInjected)
	}
	return name, nil
}

// DeleteEndpoint implements DataPath; a missing link is no error.
func (k *fakeKernel) DeleteEndpoint(id string) error {
	k.mu.Lock()
	hold := k.holdDeletes
	k.mu.Unlock()
	if hold != nil {
		<-hold // a slow removal (the kernel's RCU grace period)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("dp.DeleteEndpoint(%s)", id)
	fail, partial := k.failLocked("DeleteEndpoint")
	if fail && !partial {
		return fmt.Errorf("fake DeleteEndpoint %s: %w", id, errInjected)
	}
	delete(k.links, id)
	if fail {
		return fmt.Errorf("fake DeleteEndpoint %s (after removing it): %w", id, errInjected)
	}
	return nil
}

// Reconcile implements DataPath: devices no network of nets accounts for
// and links of endpoints not joined go, then every network is ensured.
func (k *fakeKernel) Reconcile(nets []vxlan.Network, joined map[string]bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("dp.Reconcile(%d networks)", len(nets))
	fail, partial := k.failLocked("Reconcile")
	if fail && !partial {
		return fmt.Errorf("fake Reconcile: %w", errInjected)
	}
	want := map[uint32]string{}
	for _, n := range nets {
		want[n.VNI] = n.ID
	}
	for vni, d := range k.devices {
		if id, ok := want[vni]; !ok || id != d.net {
			k.removeDeviceLocked(vni)
		}
	}
	for id := range k.links {
		if !joined[id] {
			delete(k.links, id)
		}
	}
	var errs []error
	for _, n := range nets {
		errs = append(errs, k.ensureLocked(n))
	}
	if fail {
		errs = append(errs, fmt.Errorf("fake Reconcile (after reconciling): %w", errInjected))
	}
	return errors.Join(errs...)
}

// SetPeers implements DataPath: the device's remote entries become peers,
// plus those of hosts keep says to leave alone.
func (k *fakeKernel) SetPeers(n vxlan.Network, peers []vxlan.Peer, keep func(host netip.Addr) bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("dp.SetPeers(vni%d, %d)", n.VNI, len(peers))
	d, ok := k.devices[n.VNI]
	if !ok || d.net != n.ID {
		return fmt.Errorf("network %s has no device %s", n.ID, vxlan.LinkName(n.VNI))
	}
	fail, partial := k.failLocked("SetPeers")
	if fail && !partial {
		return fmt.Errorf("fake SetPeers vni%d: %w", n.VNI, errInjected)
	}
	next := map[netip.Addr]vxlan.Peer{}
	macs := map[string]bool{}
	for _, p := range peers {
		next[p.IP] = p
		macs[p.MAC.String()] = true
	}
	for ip, p := range d.peers {
		if _, ok := next[ip]; !ok && !macs[p.MAC.String()] && keep(p.Host) {
			next[ip] = p
		}
	}
	d.peers = next
	if fail {
		return fmt.Errorf("fake SetPeers vni%d (after setting them): %w", n.VNI, errInjected)
	}
	return nil
}

// Peers implements DataPath.
func (k *fakeKernel) Peers(n vxlan.Network) ([]vxlan.Peer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.devices[n.VNI]
	if !ok || d.net != n.ID {
		return nil, fmt.Errorf("network %s has no device %s", n.ID, vxlan.LinkName(n.VNI))
	}
	out := make([]vxlan.Peer, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p)
	}
	return out, nil
}

// PeerCount implements DataPath.
func (k *fakeKernel) PeerCount(n vxlan.Network) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.devices[n.VNI]
	if !ok {
		return 0, fmt.Errorf("no device %s", vxlan.LinkName(n.VNI))
	}
	return len(d.peers), nil
}

// Apply implements Firewall. Members nil keeps the kernel's; an inactive
// state removes the tables, which is refused while a device exists.
func (k *fakeKernel) Apply(s firewall.State) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.Active {
		k.logLocked("fw.Apply(on)")
	} else {
		k.logLocked("fw.Apply(off)")
	}
	fail, partial := k.failLocked("Apply")
	if fail && !partial {
		return fmt.Errorf("fake firewall Apply: %w", errInjected)
	}
	if !s.Active && len(k.devices) > 0 {
		return k.violateLocked("firewall removed while %d device(s) exist (%s)", len(k.devices), strings.Join(k.deviceNamesLocked(), ", "))
	}
	next := firewall.State{}
	if s.Active {
		next = firewall.State{Active: true, DataPorts: slices.Clone(s.DataPorts), SecurePorts: slices.Clone(s.SecurePorts), Members: slices.Clone(s.Members)}
		if s.Members == nil && k.fw.Active {
			next.Members = slices.Clone(k.fw.Members)
		}
	}
	k.fw = next
	if fail {
		return fmt.Errorf("fake firewall Apply (after applying): %w", errInjected)
	}
	return nil
}

// Members implements Firewall.
func (k *fakeKernel) Members() ([]netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if fail, _ := k.failLocked("Members"); fail {
		return nil, fmt.Errorf("fake firewall Members: %w", errInjected)
	}
	return slices.Clone(k.fw.Members), nil
}

func (k *fakeKernel) deviceNamesLocked() []string {
	var out []string
	for vni := range k.devices {
		out = append(out, vxlan.LinkName(vni))
	}
	sort.Strings(out)
	return out
}

// Activate implements Keys: the guard, then a fresh epoch. A partial
// failure leaves the guard in the kernel with the keys inactive, as
// ipsec.Manager does when reading the kernel's state fails.
func (k *fakeKernel) Activate() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("keys.Activate")
	fail, partial := k.failLocked("Activate")
	if fail {
		if partial {
			k.xfrm = true
		}
		return fmt.Errorf("fake keys Activate: %w", errInjected)
	}
	if !k.keysActive {
		k.epoch++
	}
	k.keysActive, k.xfrm = true, true
	return nil
}

// Deactivate implements Keys: refused while an encrypted device exists. A
// failure leaves the keys inactive and the xfrm state in the kernel, as
// ipsec.Manager does when removing it fails.
func (k *fakeKernel) Deactivate() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("keys.Deactivate")
	for _, d := range k.devices {
		if k.encryptedDevice(d) {
			return k.violateLocked("IPsec state removed while encrypted network %s's device vni%d exists", d.net, d.vni)
		}
	}
	k.keysActive = false
	if fail, _ := k.failLocked("Deactivate"); fail {
		return fmt.Errorf("fake keys Deactivate: %w", errInjected)
	}
	k.xfrm = false
	return nil
}

// Active implements Keys.
func (k *fakeKernel) Active() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keysActive
}

func (k *fakeKernel) announcementLocked() announce.IPsec {
	if !k.keysActive {
		return announce.IPsec{}
	}
	return announce.IPsec{Keys: []announce.Key{{Epoch: k.epoch, Public: []byte{byte(k.epoch)}}}}
}

// Sync implements Keys.
func (k *fakeKernel) Sync(peers []ipsec.PeerInfo, settled bool) (announce.IPsec, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("keys.Sync(%d)", len(peers))
	if fail, _ := k.failLocked("Sync"); fail {
		return k.announcementLocked(), fmt.Errorf("fake keys Sync: %w", errInjected)
	}
	return k.announcementLocked(), nil
}

// Repair implements Keys: active keys put back a guard removed behind
// their back.
func (k *fakeKernel) Repair() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if fail, _ := k.failLocked("Repair"); fail {
		return fmt.Errorf("fake keys Repair: %w", errInjected)
	}
	if k.keysActive {
		k.xfrm = true
	}
	return nil
}

// Rotate implements Keys.
func (k *fakeKernel) Rotate() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.logLocked("keys.Rotate")
	if !k.keysActive {
		return errors.New("no encrypted network on this host: nothing to rotate")
	}
	if fail, _ := k.failLocked("Rotate"); fail {
		return fmt.Errorf("fake keys Rotate: %w", errInjected)
	}
	k.epoch++
	return nil
}

// SetNativeESP implements Keys: the fake records it and starts no epoch.
func (k *fakeKernel) SetNativeESP(peers []netip.Addr, complete bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.nativeESP = append([]netip.Addr(nil), peers...)
	return false
}

// NATKeepalives implements Keys: the fake's host is never behind NAT.
func (k *fakeKernel) NATKeepalives() []netip.AddrPort { return nil }

// Due implements Keys: what the test set with setDue.
func (k *fakeKernel) Due() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.due
}

func (k *fakeKernel) setDue(at time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.due = at
}

// syncs counts the keys' Syncs so far.
func (k *fakeKernel) syncs() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for _, c := range k.calls {
		if strings.HasPrefix(c, "keys.Sync(") {
			n++
		}
	}
	return n
}

// ESPSeen implements Firewall.
func (k *fakeKernel) ESPSeen() ([]netip.Addr, time.Time, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]netip.Addr(nil), k.espSeen...), time.Time{}, nil
}

// Announcement implements Keys.
func (k *fakeKernel) Announcement() announce.IPsec {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.announcementLocked()
}

// Status implements Keys.
func (k *fakeKernel) Status() ipsec.Status {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := ipsec.Status{Active: k.keysActive}
	if k.keysActive {
		s.Epochs = []uint64{k.epoch}
	}
	return s
}

// Drift: changes made behind the driver's back.

func (k *fakeKernel) removeDevice(vni uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeDeviceLocked(vni)
}

// addDevice adds a device of vxsec's for network id, as a crashed or
// earlier daemon may have left.
func (k *fakeKernel) addDevice(id string, vni uint32, mtu, port int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeDeviceLocked(vni)
	k.devices[vni] = &fakeDevice{net: id, vni: vni, mtu: mtu, port: port, peers: map[netip.Addr]vxlan.Peer{}}
}

func (k *fakeKernel) addLink(id string, vni uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.links[id] = &fakeLink{vni: vni}
}

func (k *fakeKernel) removeLink(id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.links, id)
}

func (k *fakeKernel) setMTU(vni uint32, mtu int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if d, ok := k.devices[vni]; ok {
		d.mtu = mtu
	}
}

// setFirewall and setXfrm overwrite the firewall's and the xfrm state as a
// crash or another tool may leave them.
func (k *fakeKernel) setFirewall(s firewall.State) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fw = s
}

func (k *fakeKernel) setXfrm(present bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.xfrm = present
}

// Readings for the tests.

func (k *fakeKernel) takeViolations() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.violations
	k.violations = nil
	return v
}

func (k *fakeKernel) callCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.calls)
}

func (k *fakeKernel) callsSince(i int) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.calls[i:])
}

func (k *fakeKernel) counters() (fired, creates int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.fired, k.creates
}

// kernelView is a copy of what the fake kernel holds, for invariants.
type kernelView struct {
	devices    map[uint32]fakeDevice
	links      map[string]fakeLink
	fw         firewall.State
	keysActive bool
	xfrm       bool
}

func (k *fakeKernel) view() kernelView {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := kernelView{devices: map[uint32]fakeDevice{}, links: map[string]fakeLink{}, fw: k.fw, keysActive: k.keysActive, xfrm: k.xfrm}
	for vni, d := range k.devices {
		c := *d
		c.peers = map[netip.Addr]vxlan.Peer{}
		for ip, p := range d.peers {
			c.peers[ip] = p
		}
		v.devices[vni] = c
	}
	for id, l := range k.links {
		v.links[id] = *l
	}
	return v
}

// fwString is a firewall state in few words: "off", "on", or "on" with the
// members; anything unexpected in full.
func fwString(s firewall.State, dataPort, encPort int) string {
	switch {
	case !s.Active && len(s.DataPorts) == 0 && len(s.SecurePorts) == 0 && len(s.Members) == 0:
		return "off"
	case s.Active && slices.Equal(s.DataPorts, []uint16{uint16(dataPort), uint16(encPort)}) &&
		slices.Equal(s.SecurePorts, []uint16{uint16(encPort)}):
		if len(s.Members) == 0 {
			return "on"
		}
		var m []string
		for _, a := range s.Members {
			m = append(m, a.String())
		}
		sort.Strings(m)
		return "on members=" + strings.Join(m, ",")
	default:
		return fmt.Sprintf("%+v", s)
	}
}
