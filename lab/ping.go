package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
)

// PingUntil pings dst from the container until stop is closed, then
// interrupts ping as a user's Ctrl-C would, so that it prints its
// statistics: for measuring loss across events of unknown length.
func (c *Container) PingUntil(ctx context.Context, stop <-chan struct{}, dst string, args ...string) (PingResult, error) {
	all := append([]string{"netns", "exec", c.NS, "ping", "-n"}, args...)
	cmd := exec.CommandContext(ctx, "ip", append(all, dst)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return PingResult{}, fmt.Errorf("lab: starting ping from %s: %w", c.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-stop:
		// `ip netns exec` execs ping: the pid is ping's.
		cmd.Process.Signal(os.Interrupt)
		<-done
	case <-done:
	}
	return parsePing(out.String(), dst, c.Name)
}
