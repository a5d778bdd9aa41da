package engine

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAPISocket(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dockerd"}, DefaultSocket},
		{[]string{"dockerd", "-H", "unix:///run/e1/docker.sock"}, "/run/e1/docker.sock"},
		{[]string{"dockerd", "-H", "tcp://0.0.0.0:2375", "--host=unix:///x.sock"}, "/x.sock"},
		{[]string{"dockerd", "-H=unix:///y.sock"}, "/y.sock"},
		{[]string{"dockerd", "-Hunix:///z.sock"}, "/z.sock"},
		{[]string{"dockerd", "-H", "fd://"}, DefaultSocket},
		{[]string{"dockerd", "--data-root", "-H"}, DefaultSocket},
	} {
		if got := apiSocket(tc.args); got != tc.want {
			t.Errorf("apiSocket(%q) = %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestInRoot: symlinks under root are followed inside it, absolute ones
// from root, not from the caller's own root (Debian's /var/run -> /run).
func TestInRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"run/docker/netns", "srv/x"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{"var": "", "var/run": "/run", "rel": "srv/x", "loop": "/loop", "up": "../run"}
	if err := os.MkdirAll(filepath.Join(root, "var"), 0o755); err != nil {
		t.Fatal(err)
	}
	for l, target := range links {
		if target == "" {
			continue
		}
		if err := os.Symlink(target, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ path, want string }{
		{"/var/run/docker.sock", "/run/docker.sock"},
		{"/var/run/docker/netns/abc", "/run/docker/netns/abc"},
		{"/rel/y", "/srv/x/y"},
		{"/up/docker", "/run/docker"},
		{"/../../run/x", "/run/x"},
		{"/run/docker/netns/../netns/abc", "/run/docker/netns/abc"},
	} {
		got, err := InRoot(root, tc.path)
		if err != nil || got != filepath.Join(root, tc.want) {
			t.Errorf("InRoot(%s) = %q, %v; want %s under root", tc.path, got, err, tc.want)
		}
	}
	if _, err := InRoot(root, "/loop/x"); err == nil {
		t.Error("a symlink loop was followed without end")
	}
	if _, err := InRoot(root, "run/x"); err == nil {
		t.Error("a relative path was taken")
	}
}
