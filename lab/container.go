package lab

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Container is a namespace attached to a vxsec network the way dockerd
// attaches one: CreateEndpoint, Join, then the returned device moved in,
// renamed, addressed and brought up.
type Container struct {
	Host       *Host
	Name       string
	NS         string
	NetworkID  string
	EndpointID string
	Addr       netip.Prefix
	MAC        string
	// SrcName is the device's name in the host namespace.
	SrcName string
	// Ifname is its name inside the container.
	Ifname string
	// JoinedAt is when the Join call was sent (benchmarks measure from it).
	JoinedAt time.Time
}

// Run creates a container on network netID with address addr (prefix form).
func (h *Host) Run(ctx context.Context, name, netID, addr string) (*Container, error) {
	c := &Container{Host: h, Name: name, NS: h.NS + "-" + name, NetworkID: netID, EndpointID: randomHex(32)}
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		return nil, fmt.Errorf("lab: container %s: %w", name, err)
	}
	c.Addr = p
	cl := h.Client()
	resp, err := cl.CreateEndpoint(ctx, netID, c.EndpointID, addr, "")
	if err != nil {
		return nil, err
	}
	if resp.Interface == nil || resp.Interface.MacAddress == "" {
		cl.DeleteEndpoint(ctx, netID, c.EndpointID)
		return nil, fmt.Errorf("lab: container %s: CreateEndpoint chose no MAC though none was given", name)
	}
	c.MAC = resp.Interface.MacAddress
	if err := run(ctx, "ip", "netns", "add", c.NS); err != nil {
		cl.DeleteEndpoint(ctx, netID, c.EndpointID)
		return nil, err
	}
	c.JoinedAt = time.Now()
	join, err := cl.Join(ctx, netID, c.EndpointID, "/var/run/netns/"+c.NS)
	if err != nil {
		run(ctx, "ip", "netns", "del", c.NS)
		cl.DeleteEndpoint(ctx, netID, c.EndpointID)
		return nil, err
	}
	c.SrcName = join.InterfaceName.SrcName
	c.Ifname = join.InterfaceName.DstPrefix + "0"
	steps := [][]string{
		{"-n", h.NS, "link", "set", c.SrcName, "netns", c.NS},
		{"-n", c.NS, "link", "set", c.SrcName, "name", c.Ifname},
		{"-n", c.NS, "link", "set", c.Ifname, "address", c.MAC},
		{"-n", c.NS, "addr", "add", addr, "dev", c.Ifname},
		{"-n", c.NS, "link", "set", c.Ifname, "up"},
		{"-n", c.NS, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			c.Remove(ctx)
			return nil, err
		}
	}
	h.mu.Lock()
	if h.containers == nil {
		h.containers = map[string]*Container{}
	}
	h.containers[name] = c
	h.mu.Unlock()
	return c, nil
}

// Remove detaches the container as dockerd does when it stops: the device
// goes back to the host namespace under its old name, then Leave and
// DeleteEndpoint, then the namespace goes.
func (c *Container) Remove(ctx context.Context) error {
	run(ctx, "ip", "-n", c.NS, "link", "set", c.Ifname, "down")
	run(ctx, "ip", "-n", c.NS, "link", "set", c.Ifname, "name", c.SrcName)
	run(ctx, "ip", "-n", c.NS, "link", "set", c.SrcName, "netns", c.Host.NS)
	cl := c.Host.Client()
	if err := cl.Leave(ctx, c.NetworkID, c.EndpointID); err != nil {
		return err
	}
	if err := cl.DeleteEndpoint(ctx, c.NetworkID, c.EndpointID); err != nil {
		return err
	}
	c.Host.mu.Lock()
	delete(c.Host.containers, c.Name)
	c.Host.mu.Unlock()
	return run(ctx, "ip", "netns", "del", c.NS)
}

// Exec runs a command inside the container.
func (c *Container) Exec(ctx context.Context, args ...string) (string, error) {
	return output(ctx, "ip", append([]string{"netns", "exec", c.NS}, args...)...)
}

// IP is the container's address without prefix.
func (c *Container) IP() string { return c.Addr.Addr().String() }

// PingResult is what iputils ping reported.
type PingResult struct {
	Sent, Received, Errors int
	Output                 string
}

// Loss is the number of packets sent and never answered.
func (p PingResult) Loss() int { return p.Sent - p.Received }

var pingStats = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received(?:, \+(\d+) errors)?`)

// Ping runs iputils ping in the container with extra args (e.g. "-c", "3")
// and parses its statistics; a ping that got no answer is not an error.
func (c *Container) Ping(ctx context.Context, dst string, args ...string) (PingResult, error) {
	return ping(ctx, c.NS, c.Name, dst, args)
}

// ping runs iputils ping in namespace ns and parses its statistics.
func ping(ctx context.Context, ns, who, dst string, args []string) (PingResult, error) {
	all := append([]string{"netns", "exec", ns, "ping", "-n"}, args...)
	out, _ := output(ctx, "ip", append(all, dst)...)
	return parsePing(out, dst, who)
}

// parsePing reads ping's closing statistics.
func parsePing(out, dst, who string) (PingResult, error) {
	m := pingStats.FindStringSubmatch(out)
	if m == nil {
		return PingResult{Output: out}, fmt.Errorf("lab: ping %s from %s: no statistics in output: %s", dst, who, strings.TrimSpace(out))
	}
	r := PingResult{Output: out}
	r.Sent, _ = strconv.Atoi(m[1])
	r.Received, _ = strconv.Atoi(m[2])
	if m[3] != "" {
		r.Errors, _ = strconv.Atoi(m[3])
	}
	return r, nil
}
