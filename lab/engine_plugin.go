package lab

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/filters"

	"github.com/vxsec/vxsec/plugin"
)

// Managed plugins: created from a directory, pushed to and installed from a
// registry, upgraded, and vxsec's own status through the plugin's socket.

// PluginSocketDir is where Docker 20.10 keeps a managed plugin's sockets
// (<dir>/<plugin id>/), whatever the engine's --exec-root says: engines on
// one machine share it, and their plugin IDs differ.
const PluginSocketDir = "/run/docker/plugins"

// NoRegistryAuth is an empty X-Registry-Auth ("{}"), what the CLI sends to
// a registry without credentials.
const NoRegistryAuth = "e30="

// PluginCreate creates plugin name from dir, which holds config.json and
// rootfs/ (`docker plugin create name dir`).
func (e *Engine) PluginCreate(ctx context.Context, name, dir string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDir(pw, dir)) }()
	defer pr.Close()
	return e.Client.PluginCreate(ctx, pr, types.PluginCreateOptions{RepoName: name})
}

// PluginPush pushes plugin name to its registry (`docker plugin push`).
func (e *Engine) PluginPush(ctx context.Context, name string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	rc, err := e.Client.PluginPush(ctx, name, NoRegistryAuth)
	if err != nil {
		return err
	}
	return drainJSONMessages(rc)
}

// PluginRemove removes plugin name (`docker plugin rm [-f]`).
func (e *Engine) PluginRemove(ctx context.Context, name string, force bool) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.PluginRemove(ctx, name, types.PluginRemoveOptions{Force: force})
}

// PluginInstall installs ref under its own name with the given settings
// and every permission it asks for, and enables it (`docker plugin install
// --grant-all-permissions ref settings...`).
func (e *Engine) PluginInstall(ctx context.Context, ref string, settings ...string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	rc, err := e.Client.PluginInstall(ctx, ref, types.PluginInstallOptions{
		RemoteRef:            ref,
		AcceptAllPermissions: true,
		RegistryAuth:         NoRegistryAuth,
		Args:                 settings,
	})
	if err != nil {
		return err
	}
	return drainJSONMessages(rc)
}

// PluginUpgrade upgrades the (disabled) plugin name to ref, granting every
// permission (`docker plugin upgrade --grant-all-permissions
// --skip-remote-check name ref`: the remote check is the CLI's own).
func (e *Engine) PluginUpgrade(ctx context.Context, name, ref string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	rc, err := e.Client.PluginUpgrade(ctx, name, types.PluginInstallOptions{
		RemoteRef:            ref,
		AcceptAllPermissions: true,
		RegistryAuth:         NoRegistryAuth,
	})
	if err != nil {
		return err
	}
	return drainJSONMessages(rc)
}

// PluginDisable disables plugin name (`docker plugin disable [-f]`).
func (e *Engine) PluginDisable(ctx context.Context, name string, force bool) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.PluginDisable(ctx, name, types.PluginDisableOptions{Force: force})
}

// PluginEnable enables plugin name (`docker plugin enable`, whose timeout
// for the plugin to answer is 30 s).
func (e *Engine) PluginEnable(ctx context.Context, name string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.PluginEnable(ctx, name, types.PluginEnableOptions{Timeout: 30})
}

// PluginSet changes settings of plugin name (`docker plugin set`).
func (e *Engine) PluginSet(ctx context.Context, name string, settings ...string) error {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.PluginSet(ctx, name, settings)
}

// Plugins lists the engine's plugins (`docker plugin ls`).
func (e *Engine) Plugins(ctx context.Context) (types.PluginsListResponse, error) {
	ctx, cancel := e.call(ctx)
	defer cancel()
	return e.Client.PluginList(ctx, filters.NewArgs())
}

// Plugin is the engine's plugin named name.
func (e *Engine) Plugin(ctx context.Context, name string) (*types.Plugin, error) {
	ps, err := e.Plugins(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("lab: %s has no plugin %s: %w", e.Name, name, errNotFound)
}

// PluginEnabled reports whether plugin name is installed and enabled.
func (e *Engine) PluginEnabled(ctx context.Context, name string) bool {
	p, err := e.Plugin(ctx, name)
	return err == nil && p.Enabled
}

// PluginSocket is the path of the socket plugin name serves on.
func (e *Engine) PluginSocket(ctx context.Context, name string) (string, error) {
	p, err := e.Plugin(ctx, name)
	if err != nil {
		return "", err
	}
	sock := p.Config.Interface.Socket
	if sock == "" {
		return "", fmt.Errorf("lab: plugin %s on %s names no socket", name, e.Name)
	}
	return filepath.Join(PluginSocketDir, p.ID, sock), nil
}

// VxsecStatus asks the vxsec plugin named name for its status (what
// `vxsec status --socket <its socket>` prints), decoded and as sent.
func (e *Engine) VxsecStatus(ctx context.Context, name string) (Status, []byte, error) {
	sock, err := e.PluginSocket(ctx, name)
	if err != nil {
		return Status{}, nil, err
	}
	return StatusAt(ctx, sock)
}

// StatusAt asks the vxsec daemon serving on socket for its status, decoded
// and as sent (within 20 s).
func StatusAt(ctx context.Context, socket string) (Status, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var raw json.RawMessage
	if err := plugin.NewClient(socket).Call(ctx, "VxSec.Status", struct{}{}, &raw); err != nil {
		return Status{}, nil, err
	}
	var st Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return Status{}, raw, fmt.Errorf("lab: decoding the status from %s: %w", socket, err)
	}
	return st, raw, nil
}

// drainJSONMessages reads a JSON message stream (pull, push, install) to
// its end, returning the first error it reports.
func drainJSONMessages(rc io.ReadCloser) error {
	defer rc.Close()
	dec := json.NewDecoder(rc)
	var first error
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return first
			}
			if first != nil {
				return first
			}
			return err
		}
		if first == nil {
			switch {
			case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
				first = errors.New(m.ErrorDetail.Message)
			case m.Error != "":
				first = errors.New(m.Error)
			}
		}
	}
}

// tarDir writes dir as an uncompressed tar (what `docker plugin create`
// sends).
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if info.IsDir() && !strings.HasSuffix(hdr.Name, "/") {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
