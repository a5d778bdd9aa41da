package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/swarm"
	"github.com/docker/docker/pkg/stdcopy"
)

// Images, networks, services, tasks and containers of an engine.

// ImageImport imports the tar file path as image ref with the Dockerfile
// changes given (`docker import --change ... - ref`).
func (e *Engine) ImageImport(ctx context.Context, path, ref string, changes ...string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rc, err := e.Client.ImageImport(ctx, image.ImportSource{Source: f, SourceName: "-"}, ref, image.ImportOptions{Changes: changes})
	if err != nil {
		return err
	}
	return drainJSONMessages(rc)
}

// ImagePush pushes ref to its registry (`docker push`).
func (e *Engine) ImagePush(ctx context.Context, ref string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	rc, err := e.Client.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: NoRegistryAuth})
	if err != nil {
		return err
	}
	return drainJSONMessages(rc)
}

// ImagePull pulls ref (`docker pull`).
func (e *Engine) ImagePull(ctx context.Context, ref string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	rc, err := e.Client.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: NoRegistryAuth})
	if err != nil {
		return err
	}
	return drainJSONMessages(rc)
}

// NetworkCreate creates a network (`docker network create -d driver --opt
// k=v --attachable --subnet S name`); opts "encrypted" is `--opt encrypted`.
func (e *Engine) NetworkCreate(ctx context.Context, name, driver, subnet string, attachable bool, opts map[string]string) (string, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	o := network.CreateOptions{Driver: driver, Attachable: attachable, Options: opts,
		IPAM: &network.IPAM{Driver: "default", Options: map[string]string{}}}
	if subnet != "" {
		o.IPAM.Config = []network.IPAMConfig{{Subnet: subnet}}
	}
	r, err := e.Client.NetworkCreate(ctx, name, o)
	return r.ID, err
}

// NetworkInspect inspects a network, decoded and as sent.
func (e *Engine) NetworkInspect(ctx context.Context, name string) (network.Inspect, []byte, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.NetworkInspectWithRaw(ctx, name, network.InspectOptions{})
}

// Networks lists the engine's networks of driver (all when "").
func (e *Engine) Networks(ctx context.Context, driver string) ([]network.Summary, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	all, err := e.Client.NetworkList(ctx, network.ListOptions{})
	if err != nil || driver == "" {
		return all, err
	}
	var out []network.Summary
	for _, n := range all {
		if n.Driver == driver {
			out = append(out, n)
		}
	}
	return out, nil
}

// NetworkRemove removes a network (`docker network rm`).
func (e *Engine) NetworkRemove(ctx context.Context, name string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.NetworkRemove(ctx, name)
}

// ServiceCreate creates a service (`docker service create --detach`).
func (e *Engine) ServiceCreate(ctx context.Context, spec swarm.ServiceSpec) (string, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	r, err := e.Client.ServiceCreate(ctx, spec, swarm.ServiceCreateOptions{})
	return r.ID, err
}

// GlobalService is the spec of `docker service create --mode global
// [--endpoint-mode dnsrr] --name name --network net ... image args...`.
func GlobalService(name, net, img string, dnsrr bool, args ...string) swarm.ServiceSpec {
	mode := swarm.ResolutionModeVIP
	if dnsrr {
		mode = swarm.ResolutionModeDNSRR
	}
	return swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: name},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: &swarm.ContainerSpec{Image: img, Args: args},
			Networks:      []swarm.NetworkAttachmentConfig{{Target: net}},
		},
		Mode:         swarm.ServiceMode{Global: &swarm.GlobalService{}},
		EndpointSpec: &swarm.EndpointSpec{Mode: mode},
	}
}

// ReplicatedService is the spec of `docker service create --replicas n
// --name name --network net ... image args...` (VIP mode).
func ReplicatedService(name, net, img string, n uint64, args ...string) swarm.ServiceSpec {
	s := GlobalService(name, net, img, false, args...)
	s.Mode = swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &n}}
	return s
}

// ServiceScale sets a replicated service's replicas (`docker service
// scale name=n`).
func (e *Engine) ServiceScale(ctx context.Context, name string, n uint64) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	s, _, err := e.Client.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	if err != nil {
		return err
	}
	if s.Spec.Mode.Replicated == nil {
		return fmt.Errorf("service %s is not replicated", name)
	}
	s.Spec.Mode.Replicated.Replicas = &n
	_, err = e.Client.ServiceUpdate(ctx, s.ID, s.Version, s.Spec, swarm.ServiceUpdateOptions{})
	return err
}

// Services lists the swarm's services.
func (e *Engine) Services(ctx context.Context) ([]swarm.Service, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.ServiceList(ctx, swarm.ServiceListOptions{})
}

// Service inspects a service.
func (e *Engine) Service(ctx context.Context, name string) (swarm.Service, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	s, _, err := e.Client.ServiceInspectWithRaw(ctx, name, swarm.ServiceInspectOptions{})
	return s, err
}

// ServiceRemove removes a service (`docker service rm`).
func (e *Engine) ServiceRemove(ctx context.Context, name string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.ServiceRemove(ctx, name)
}

// RunningTasks counts the tasks of service that run and should run, as this
// manager sees them.
func (e *Engine) RunningTasks(ctx context.Context, service string) (int, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	ts, err := e.Client.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(
		filters.Arg("service", service), filters.Arg("desired-state", "running"))})
	n := 0
	for _, t := range ts {
		if t.Status.State == swarm.TaskStateRunning {
			n++
		}
	}
	return n, err
}

// TaskErrors are the errors of service's tasks, as `docker service ps
// --no-trunc` shows them (tasks without one are left out).
func (e *Engine) TaskErrors(ctx context.Context, service string) ([]string, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	ts, err := e.Client.TaskList(ctx, swarm.TaskListOptions{Filters: filters.NewArgs(filters.Arg("service", service))})
	var out []string
	for _, t := range ts {
		if t.Status.Err != "" {
			out = append(out, t.Status.Err)
		}
	}
	return out, err
}

// ServiceContainers lists the engine's containers of swarm tasks (of
// service, or of any service when ""), running ones only unless all.
func (e *Engine) ServiceContainers(ctx context.Context, service string, all bool) ([]container.Summary, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	label := "com.docker.swarm.service.name"
	if service != "" {
		label += "=" + service
	}
	f := filters.NewArgs(filters.Arg("label", label))
	if !all {
		f.Add("status", "running")
	}
	return e.Client.ContainerList(ctx, container.ListOptions{All: all, Filters: f})
}

// Task is the running container of a service's task on one engine.
type Task struct {
	Service, Engine string
	ContainerID     string
	// Pid is the container's first process, for nsenter.
	Pid int
	// IP is its address on the network it was looked up for.
	IP string
}

// ServiceTask is the running container of service on this engine, with
// its address on network net.
func (e *Engine) ServiceTask(ctx context.Context, service, net string) (Task, error) {
	cs, err := e.ServiceContainers(ctx, service, false)
	if err != nil {
		return Task{}, err
	}
	if len(cs) == 0 {
		return Task{}, fmt.Errorf("lab: no running task of %s on %s: %w", service, e.Name, errNotFound)
	}
	c := cs[0]
	t := Task{Service: service, Engine: e.Name, ContainerID: c.ID}
	if c.NetworkSettings != nil {
		if n, ok := c.NetworkSettings.Networks[net]; ok && n != nil {
			t.IP = n.IPAddress
		}
	}
	if t.IP == "" {
		return t, fmt.Errorf("lab: %s's task on %s has no address on %s", service, e.Name, net)
	}
	ctx, cancel := e.call(ctx)
	defer cancel()
	insp, err := e.Client.ContainerInspect(ctx, c.ID)
	if err != nil {
		return t, err
	}
	if insp.State == nil || insp.State.Pid == 0 {
		return t, fmt.Errorf("lab: %s's task on %s (%.12s) has no process", service, e.Name, c.ID)
	}
	t.Pid = insp.State.Pid
	return t, nil
}

// NetExec runs a program of this machine (iputils ping, iproute2) in the
// task's network namespace.
func (t Task) NetExec(ctx context.Context, args ...string) (string, error) {
	return output(ctx, "nsenter", append([]string{"-t", strconv.Itoa(t.Pid), "-n", "--"}, args...)...)
}

// NetCommand is NetExec's command, not started (a ping to interrupt).
func (t Task) NetCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(t.Pid), "-n", "--"}, args...)...)
}

// Sh runs script with the task's own /bin/sh in all of its namespaces (as
// `docker exec` would, without the engine).
func (t Task) Sh(ctx context.Context, script string) (string, error) {
	return output(ctx, "nsenter", "-t", strconv.Itoa(t.Pid), "-m", "-u", "-i", "-n", "-p", "--", "/bin/sh", "-c", script)
}

// Ping runs iputils ping in the task's network namespace and parses its
// statistics; a ping that got no answer is not an error.
func (t Task) Ping(ctx context.Context, dst string, args ...string) (PingResult, error) {
	all := append([]string{"-t", strconv.Itoa(t.Pid), "-n", "--", "ping", "-n"}, args...)
	out, _ := output(ctx, "nsenter", append(all, dst)...)
	return parsePing(out, dst, t.Service+"@"+t.Engine)
}

// ExecResult is what a command run in a container said.
type ExecResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// ContainerExec runs cmd in a running container through the engine
// (`docker exec`).
func (e *Engine) ContainerExec(ctx context.Context, id string, cmd ...string) (ExecResult, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	cr, err := e.Client.ContainerExecCreate(ctx, id, container.ExecOptions{AttachStdout: true, AttachStderr: true, Cmd: cmd})
	if err != nil {
		return ExecResult{}, err
	}
	att, err := e.Client.ContainerExecAttach(ctx, cr.ID, container.ExecAttachOptions{})
	if err != nil {
		return ExecResult{}, err
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader)
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		return ExecResult{}, ctx.Err()
	}
	if err != nil {
		return ExecResult{}, err
	}
	insp, err := e.Client.ContainerExecInspect(ctx, cr.ID)
	if err != nil {
		return ExecResult{}, err
	}
	return ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: insp.ExitCode}, nil
}

// ContainerRun runs a container to its end and removes it (`docker run
// --rm --network net image cmd...`), returning its output and exit code.
func (e *Engine) ContainerRun(ctx context.Context, img, net string, cmd ...string) (ExecResult, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	cfg := &container.Config{Image: img, Cmd: cmd}
	hc := &container.HostConfig{NetworkMode: container.NetworkMode(net)}
	nc := &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{net: {}}}
	cr, err := e.Client.ContainerCreate(ctx, cfg, hc, nc, nil, "")
	if err != nil {
		return ExecResult{}, err
	}
	defer func() {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), e.CallTimeout)
		defer rcancel()
		e.Client.ContainerRemove(rctx, cr.ID, container.RemoveOptions{Force: true})
	}()
	waitC, errC := e.Client.ContainerWait(ctx, cr.ID, container.WaitConditionNextExit)
	if err := e.Client.ContainerStart(ctx, cr.ID, container.StartOptions{}); err != nil {
		return ExecResult{}, err
	}
	var res ExecResult
	select {
	case w := <-waitC:
		res.ExitCode = int(w.StatusCode)
		if w.Error != nil && w.Error.Message != "" {
			return res, fmt.Errorf("lab: waiting for the container: %s", w.Error.Message)
		}
	case err := <-errC:
		return res, err
	}
	logs, err := e.Client.ContainerLogs(ctx, cr.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return res, err
	}
	defer logs.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, logs); err != nil {
		return res, err
	}
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	return res, nil
}

// Combined is the result's output, stdout then stderr, trimmed.
func (r ExecResult) Combined() string {
	return strings.TrimSpace(r.Stdout + r.Stderr)
}
