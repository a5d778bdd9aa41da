package main

import (
	"reflect"
	"testing"
)

func TestParseSweep(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		bad  bool
	}{
		{in: "10,50,100", want: []int{10, 50, 100}},
		{in: " 5, 10 ,", want: []int{5, 10}},
		{in: "50", want: []int{50}},
		{in: "", bad: true},
		{in: "10,x", bad: true},
		{in: "1,10", bad: true},
		{in: "-5", bad: true},
	} {
		got, err := parseSweep(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseSweep(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseSweep(%q) = %v, %v, want %v", tc.in, got, err, tc.want)
		}
	}
}
