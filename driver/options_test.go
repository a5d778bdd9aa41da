package driver

import (
	"strings"
	"testing"
)

func TestParseOptions(t *testing.T) {
	cases := []struct {
		name    string
		in      map[string]string
		want    Options
		wantErr []string
	}{
		{"empty", nil, Options{}, nil},
		{"vni", map[string]string{"vni": "42"}, Options{VNI: 42}, nil},
		{"vni-max", map[string]string{"vni": "16777215"}, Options{VNI: MaxVNI}, nil},
		{"vni-spaces", map[string]string{"vni": " 7 "}, Options{VNI: 7}, nil},
		{"vni-zero", map[string]string{"vni": "0"}, Options{}, []string{"vni", "1 to 16777215"}},
		{"vni-over", map[string]string{"vni": "16777216"}, Options{}, []string{"1 to 16777215"}},
		{"vni-negative", map[string]string{"vni": "-1"}, Options{}, []string{"1 to 16777215"}},
		{"vni-text", map[string]string{"vni": "ten"}, Options{}, []string{`"ten"`}},
		{"encrypted-bare", map[string]string{"encrypted": ""}, Options{Encrypted: true}, nil},
		{"encrypted-true", map[string]string{"encrypted": "TRUE"}, Options{Encrypted: true}, nil},
		{"encrypted-false", map[string]string{"encrypted": "false"}, Options{}, nil},
		{"encrypted-junk", map[string]string{"encrypted": "yes"}, Options{}, []string{"--opt encrypted=false"}},
		{"mtu", map[string]string{OptMTU: "9000"}, Options{UnderlayMTU: 9000}, nil},
		{"mtu-zero", map[string]string{OptMTU: "0"}, Options{}, []string{"whole number up to 65535"}},
		{"mtu-huge", map[string]string{OptMTU: "65536"}, Options{}, []string{"65535"}},
		{"unknown", map[string]string{"vxlanid": "1"}, Options{}, []string{`unknown option "vxlanid"`, "accepted options: vni"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOptions(tc.in)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseOptions(%v) = %+v, want an error", tc.in, got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseOptions(%v) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			// What Map renders parses back to the same options: swarm relies on it.
			back, err := ParseOptions(got.Map())
			if err != nil || back != got {
				t.Fatalf("round trip of %+v through %v = %+v, %v", got, got.Map(), back, err)
			}
		})
	}
}

func TestGenericOptions(t *testing.T) {
	cases := []struct {
		name    string
		in      map[string]any
		want    map[string]string
		wantErr bool
	}{
		{"none", map[string]any{}, map[string]string{}, false},
		{"docker-keys-ignored", map[string]any{"com.docker.network.enable_ipv6": false, "com.docker.network.internal": true}, map[string]string{}, false},
		{"strings", map[string]any{genericKey: map[string]any{"vni": "5", "encrypted": ""}}, map[string]string{"vni": "5", "encrypted": ""}, false},
		{"typed", map[string]any{genericKey: map[string]any{"vni": float64(5), "encrypted": true}}, map[string]string{"vni": "5", "encrypted": "true"}, false},
		{"not-an-object", map[string]any{genericKey: "vni=5"}, nil, true},
		{"nested", map[string]any{genericKey: map[string]any{"vni": []any{1}}}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := GenericOptions(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestContainerMTU(t *testing.T) {
	cases := []struct {
		underlay int
		ipv6     bool
		want     int
		wantErr  bool
	}{
		{1500, false, 1450, false},
		{1500, true, 1430, false},
		{9000, false, 8950, false},
		{1400, false, 1350, false},
		{118, false, 68, false},
		{117, false, 0, true},
		{137, true, 0, true},
	}
	for _, tc := range cases {
		got, err := ContainerMTU(tc.underlay, tc.ipv6)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ContainerMTU(%d, ipv6=%v) = %d, %v; want %d, err=%v", tc.underlay, tc.ipv6, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestAutoVNI(t *testing.T) {
	none := func(uint32) bool { return false }
	a, err := AutoVNI("net-a", none)
	if err != nil {
		t.Fatal(err)
	}
	if a < autoVNIBase || a > MaxVNI {
		t.Fatalf("AutoVNI = %d, outside %d..%d", a, autoVNIBase, MaxVNI)
	}
	if again, _ := AutoVNI("net-a", none); again != a {
		t.Fatalf("AutoVNI is not deterministic: %d then %d", a, again)
	}
	// A taken VNI is skipped, to the next free one, wrapping at the top.
	next, _ := AutoVNI("net-a", func(v uint32) bool { return v == a })
	wantNext := a + 1
	if a == MaxVNI {
		wantNext = autoVNIBase
	}
	if next != wantNext {
		t.Fatalf("AutoVNI with %d taken = %d, want %d", a, next, wantNext)
	}
	if _, err := AutoVNI("x", func(uint32) bool { return true }); err == nil {
		t.Fatal("AutoVNI with every VNI taken: want an error")
	}
}
