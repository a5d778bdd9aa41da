package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// PingAcross pings dst from the container while during runs, with a second
// of margin on each side, then interrupts ping as a user's Ctrl-C would so
// that it prints its statistics: loss across an event of unknown length.
// Ping is stopped however during ends, a test stopping inside it included.
func (c *Container) PingAcross(ctx context.Context, dst string, args []string, during func() error) (PingResult, error) {
	all := append([]string{"netns", "exec", c.NS, "ping", "-n"}, args...)
	cmd := exec.CommandContext(ctx, "ip", append(all, dst)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return PingResult{}, fmt.Errorf("lab: starting ping from %s: %w", c.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			// `ip netns exec` execs ping: the pid is ping's.
			cmd.Process.Signal(os.Interrupt)
			<-done
		}
	}
	defer stop()
	time.Sleep(time.Second)
	if err := during(); err != nil {
		return PingResult{}, err
	}
	time.Sleep(time.Second)
	stop()
	return parsePing(out.String(), dst, c.Name)
}
