package announce

import "testing"

func TestVersion(t *testing.T) {
	cases := []struct {
		a, b Version
		less bool
	}{
		{Version{1, 5}, Version{1, 6}, true},
		{Version{1, 6}, Version{1, 5}, false},
		{Version{1, 99}, Version{2, 0}, true}, // a restart always moves forward
		{Version{2, 0}, Version{1, 99}, false},
		{Version{1, 1}, Version{1, 1}, false},
		{Version{}, Version{0, 1}, true},
	}
	for _, tc := range cases {
		if got := tc.a.Less(tc.b); got != tc.less {
			t.Errorf("%v.Less(%v) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
		back, err := ParseVersion(tc.a.String())
		if err != nil || back != tc.a {
			t.Errorf("ParseVersion(%q) = %v, %v", tc.a.String(), back, err)
		}
	}
	for _, bad := range []string{"", "1", "1.x", "a.1", "1.-1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q): want an error", bad)
		}
	}
}
