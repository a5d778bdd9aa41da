package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/docker/go-plugins-helpers/network"
)

// Client speaks the remote driver API to a plugin socket the way dockerd
// does: HTTP POST of JSON, errors in an "Err" field. Tests and the lab use
// it to stand in for dockerd.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the plugin listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{socket: socket, http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Call posts req to /method and decodes the answer into resp (may be nil).
func (c *Client) Call(ctx context.Context, method string, req, resp any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encoding request: %w", method, err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/"+method, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	hr.Header.Set("Accept", "application/vnd.docker.plugins.v1.2+json")
	hr.Header.Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	res, err := c.http.Do(hr)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("%s: reading answer: %w", method, err)
	}
	var e struct{ Err string }
	if json.Unmarshal(data, &e) == nil && e.Err != "" {
		return &RemoteError{Method: method, Msg: e.Err}
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", method, res.StatusCode, bytes.TrimSpace(data))
	}
	if resp != nil {
		if err := json.Unmarshal(data, resp); err != nil {
			return fmt.Errorf("%s: decoding answer %q: %w", method, data, err)
		}
	}
	return nil
}

// RemoteError is an error the plugin returned, as Docker would show it.
type RemoteError struct {
	Method string
	Msg    string
}

func (e *RemoteError) Error() string { return e.Method + ": " + e.Msg }

// IsRemote reports whether err is the plugin's own refusal (rather than a
// transport failure).
func IsRemote(err error) bool {
	var re *RemoteError
	return errors.As(err, &re)
}

// Activate is the handshake dockerd starts with.
func (c *Client) Activate(ctx context.Context) ([]string, error) {
	var r struct{ Implements []string }
	err := c.Call(ctx, "Plugin.Activate", struct{}{}, &r)
	return r.Implements, err
}

// Capabilities asks for the driver's scope.
func (c *Client) Capabilities(ctx context.Context) (network.CapabilitiesResponse, error) {
	var r network.CapabilitiesResponse
	err := c.Call(ctx, "NetworkDriver.GetCapabilities", struct{}{}, &r)
	return r, err
}

// CreateNetwork sends --opt k=v the way dockerd does: under the generic key.
func (c *Client) CreateNetwork(ctx context.Context, id string, opts map[string]string, pool, gateway string) error {
	generic := map[string]any{}
	for k, v := range opts {
		generic[k] = v
	}
	req := network.CreateNetworkRequest{
		NetworkID: id,
		Options:   map[string]any{"com.docker.network.generic": generic, "com.docker.network.enable_ipv6": false},
		IPv4Data:  []*network.IPAMData{{AddressSpace: "GlobalDefault", Pool: pool, Gateway: gateway}},
	}
	return c.Call(ctx, "NetworkDriver.CreateNetwork", req, nil)
}

// DeleteNetwork removes a network.
func (c *Client) DeleteNetwork(ctx context.Context, id string) error {
	return c.Call(ctx, "NetworkDriver.DeleteNetwork", network.DeleteNetworkRequest{NetworkID: id}, nil)
}

// AllocateNetwork is what the swarm leader's engine sends.
func (c *Client) AllocateNetwork(ctx context.Context, id string, opts map[string]string, pool string) (map[string]string, error) {
	var r network.AllocateNetworkResponse
	err := c.Call(ctx, "NetworkDriver.AllocateNetwork", network.AllocateNetworkRequest{
		NetworkID: id, Options: opts, IPv4Data: []network.IPAMData{{Pool: pool}},
	}, &r)
	return r.Options, err
}

// CreateEndpoint creates an endpoint with an address and, if not empty, a MAC.
func (c *Client) CreateEndpoint(ctx context.Context, netID, epID, addr, mac string) (network.CreateEndpointResponse, error) {
	var r network.CreateEndpointResponse
	err := c.Call(ctx, "NetworkDriver.CreateEndpoint", network.CreateEndpointRequest{
		NetworkID: netID, EndpointID: epID,
		Interface: &network.EndpointInterface{Address: addr, MacAddress: mac},
		Options:   map[string]any{},
	}, &r)
	return r, err
}

// DeleteEndpoint removes an endpoint.
func (c *Client) DeleteEndpoint(ctx context.Context, netID, epID string) error {
	return c.Call(ctx, "NetworkDriver.DeleteEndpoint", network.DeleteEndpointRequest{NetworkID: netID, EndpointID: epID}, nil)
}

// Join asks for the endpoint's device.
func (c *Client) Join(ctx context.Context, netID, epID, sandboxKey string) (network.JoinResponse, error) {
	var r network.JoinResponse
	err := c.Call(ctx, "NetworkDriver.Join", network.JoinRequest{
		NetworkID: netID, EndpointID: epID, SandboxKey: sandboxKey, Options: map[string]any{},
	}, &r)
	return r, err
}

// Leave detaches the endpoint.
func (c *Client) Leave(ctx context.Context, netID, epID string) error {
	return c.Call(ctx, "NetworkDriver.Leave", network.LeaveRequest{NetworkID: netID, EndpointID: epID}, nil)
}
