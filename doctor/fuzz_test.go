package doctor

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"reflect"
	"testing"
	"time"
)

// FuzzDecode: a member's answer is outside input (any member, or a release
// gone wrong, writes it). Whatever arrives, reading it, diagnosing with it
// and writing the report never panic; what reads encodes again to what
// reads the same.
func FuzzDecode(f *testing.F) {
	for _, a := range []Answer{worst(3, false), worst(2, true), {Clock: 1}, {Cut: []int{1, 0, 2}}} {
		b, err := json.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"t":-1,"r":-5,"u":-1,"c":[-1,99999999999],"s":"BAo="}`))
	f.Add([]byte(`{"s":"EAAAAAAAAAAAAAAAAAAAAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(a, math.MaxInt)
		if err != nil {
			t.Fatalf("an answer that decoded does not encode: %v", err)
		}
		b2, err := Decode(again)
		if err != nil {
			t.Fatalf("an answer's own encoding does not decode: %v\n%s", err, again)
		}
		if third, _ := Encode(b2, math.MaxInt); !bytes.Equal(third, again) {
			t.Fatalf("encoding is not stable:\n%s\n%s", again, third)
		}
		now := time.Unix(1_800_000_000, 0)
		in := Input{Self: "198.18.0.1", DataPort: 4800, GossipPort: 7947, ESPUDPPort: 4802, Waited: time.Second,
			Members: []Member{{"198.18.0.1", "alive"}, {"198.18.0.2", "alive"}, {"198.18.0.3", "alive"}},
			Answers: map[string]Received{
				"198.18.0.1": {Answer: worst(3, false), At: now},
				"198.18.0.2": {Answer: a, At: now, RTT: time.Millisecond},
				"198.18.0.3": {Answer: b2, At: now, RTT: time.Millisecond},
			}}
		r := Diagnose(in)
		r.WriteText(io.Discard)
		if !reflect.DeepEqual(r, Diagnose(in)) {
			t.Fatal("Diagnose is not deterministic")
		}
	})
}
