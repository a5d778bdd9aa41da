package testutil

import (
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// InNewNetns runs f on a thread moved into a fresh network namespace, which
// goes when f returns: sockets, links, nftables and xfrm state made there
// touch nothing of the machine's. It needs root.
func InNewNetns(t testing.TB, f func(ns netns.NsHandle)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test works in a network namespace of its own: it needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	defer netns.Set(orig)
	ns, err := netns.New() // the thread is in it from here
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	f(ns)
}

// InNamedNetns runs f on a thread moved into the named namespace (as `ip
// netns add` made it): a socket made there stays in it.
func InNamedNetns(t testing.TB, name string, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	f()
}
