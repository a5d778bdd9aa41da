package ipam

import (
	"strings"
	"testing"
)

func TestPoolsMayOverlap(t *testing.T) {
	a, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p1, err := a.RequestPool("10.40.0.0/24", "", false)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := a.RequestPool("10.40.0.0/24", "", false)
	if err != nil {
		t.Fatalf("a second pool of the same subnet: %v", err)
	}
	if p1.ID == p2.ID {
		t.Fatal("two pools share an ID")
	}
	for _, p := range []*Pool{p1, p2} {
		gw, err := a.RequestAddress(p.ID, "", true)
		if err != nil || gw.String() != "10.40.0.1/24" {
			t.Fatalf("gateway = %v, %v", gw, err)
		}
		c, err := a.RequestAddress(p.ID, "", false)
		if err != nil || c.String() != "10.40.0.2/24" {
			t.Fatalf("first container address = %v, %v", c, err)
		}
	}
}

func TestAddresses(t *testing.T) {
	dir := t.TempDir()
	a, _ := Open(dir)
	p, err := a.RequestPool("10.1.0.0/29", "10.1.0.4/30", false)
	if err != nil {
		t.Fatal(err)
	}
	if gw, _ := a.RequestAddress(p.ID, "", true); gw.String() != "10.1.0.1/29" {
		t.Fatalf("gateway from the whole subnet: %v", gw)
	}
	// From the range only, skipping nothing usable; .7 is broadcast.
	got := []string{}
	for i := 0; i < 3; i++ {
		addr, err := a.RequestAddress(p.ID, "", false)
		if err != nil {
			if !strings.Contains(err.Error(), "no free address") {
				t.Fatal(err)
			}
			break
		}
		got = append(got, addr.String())
	}
	if strings.Join(got, " ") != "10.1.0.4/29 10.1.0.5/29 10.1.0.6/29" {
		t.Fatalf("addresses from the range = %v", got)
	}
	if _, err := a.RequestAddress(p.ID, "10.1.0.5", false); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("taking a used address: %v", err)
	}
	if err := a.ReleaseAddress(p.ID, "10.1.0.5/29"); err != nil {
		t.Fatal(err)
	}
	if addr, err := a.RequestAddress(p.ID, "10.1.0.5", false); err != nil || addr.String() != "10.1.0.5/29" {
		t.Fatalf("a released address again: %v %v", addr, err)
	}
	// It all survives a restart.
	b, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.RequestAddress(p.ID, "10.1.0.6", false); err == nil {
		t.Fatal("after reopening, a used address was given out again")
	}
	if err := b.ReleasePool(p.ID); err != nil {
		t.Fatal(err)
	}
	if c, _ := Open(dir); len(c.pools) != 0 {
		t.Fatal("a released pool came back")
	}
}

func TestRefusals(t *testing.T) {
	a, _ := Open(t.TempDir())
	cases := []struct {
		pool, sub string
		v6        bool
		want      string
	}{
		{"", "", false, "needs a subnet"},
		{"fd00::/64", "", true, "IPv6"},
		{"10.0.0.0/31", "", false, "too small"},
		{"banana", "", false, "not an IPv4 prefix"},
		{"10.0.0.0/24", "10.9.0.0/25", false, "not inside"},
	}
	for _, tc := range cases {
		if _, err := a.RequestPool(tc.pool, tc.sub, tc.v6); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RequestPool(%q, %q, %v) = %v, want %q", tc.pool, tc.sub, tc.v6, err, tc.want)
		}
	}
	p, _ := a.RequestPool("10.2.0.0/24", "", false)
	for _, bad := range []string{"10.2.0.0", "10.2.0.255", "10.3.0.1", "x"} {
		if _, err := a.RequestAddress(p.ID, bad, false); err == nil {
			t.Errorf("RequestAddress(%q): want a refusal", bad)
		}
	}
}
