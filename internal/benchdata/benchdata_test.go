package benchdata

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReadDocker(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
		want                DockerRuns
		err                 string
	}{
		{
			name: "as scripts/bench.sh writes it", file: "bench-docker-28.tsv",
			content: "round\tnetwork\tms\n1\tvxsec\t920\n1\toverlay\t1079\n2\tbridge\t612\n",
			want:    DockerRuns{Engine: "28", Runs: []DockerRun{{1, "vxsec", 920}, {1, "overlay", 1079}, {2, "bridge", 612}}},
		},
		{
			name: "header only", file: "bench-docker-20.10.tsv", content: "round\tnetwork\tms\n",
			want: DockerRuns{Engine: "20.10"},
		},
		{name: "a field short", file: "bench-docker-28.tsv", content: "round\tnetwork\tms\n1\tvxsec\n", err: ":2: 2 fields, want 3"},
		{name: "not a number", file: "bench-docker-28.tsv", content: "1\tvxsec\tslow\n", err: ":1: ms:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ReadDocker(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.want.File = path
			if got.Modified.IsZero() {
				t.Error("no modification time")
			}
			got.Modified = time.Time{}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadSwarm(t *testing.T) {
	const tsv = "1\tvxsec\t32.5\n1\toverlay\t54.4\n2\toverlay\t54.3\n2\tvxsec\t23.9\n"
	runs := []SwarmRun{{1, "vxsec", 32.5}, {1, "overlay", 54.4}, {2, "overlay", 54.3}, {2, "vxsec", 23.9}}
	const warmUp = "after one untimed warm-up run of each (vxsec 18.6 s, overlay 11.1 s)"
	const dnsrr = "swarm lab benchmark: docker service create --mode global (3 nodes, --opt encrypted, --endpoint-mode dnsrr)\n"
	for _, tc := range []struct {
		name, file, txtFile, txt, mode string
	}{
		{"dnsrr", "bench.tsv", "bench.txt", dnsrr, "dnsrr"},
		{"vip", "bench.tsv", "bench.txt", "swarm lab benchmark: docker service create --mode global (3 nodes, --opt encrypted, VIP mode)\n", "vip"},
		{"no bench.txt", "bench.tsv", "", "", ""},
		// The copy scripts/swarm-lab.sh leaves for the report.
		{"the copy", "swarm-bench.tsv", "swarm-bench.txt", dnsrr, "dnsrr"},
		{"with a warm-up", "swarm-bench.tsv", "swarm-bench.txt", dnsrr + warmUp + "\nvxsec   runs: 7.8 s\n", "dnsrr"},
		{"the copy, another's text beside it", "swarm-bench.tsv", "bench.txt", dnsrr, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			if err := os.WriteFile(path, []byte(tsv), 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.txt != "" {
				if err := os.WriteFile(filepath.Join(dir, tc.txtFile), []byte(tc.txt), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadSwarm(path)
			if err != nil {
				t.Fatal(err)
			}
			want := Swarm{File: path, Mode: tc.mode, Runs: runs, Modified: got.Modified}
			if strings.Contains(tc.txt, warmUp) {
				want.WarmUp = warmUp
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

// TestLoad: what Write writes, Load reads back; what is missing is nil, and
// a damaged file is an error naming it rather than a benchmark dropped.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	wire := int64(12345)
	conv := Convergence{Meta: NewMeta(ConvergenceName, "v1"), Hosts: 3, Endpoints: 2, JoinToReplyS: []float64{0.05, 0.07}, PlumbingS: []float64{0.01, 0.02}}
	scale := Scale{Meta: NewMeta(ScaleName, "v1"), PollS: 0.05, Runs: []ScaleRun{{Hosts: 5, PerHost: 2, Endpoints: 10, PerHostS: []float64{1, 2, 3, 4, 5}, WireBytes: &wire}, {Hosts: 10}}}
	if err := Write(dir, ConvergenceName, conv); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, ScaleName, scale); err != nil {
		t.Fatal(err)
	}
	got, err := Load(Sources{Dir: dir, DockerGlob: filepath.Join(dir, "bench-docker-*.tsv"), SwarmTSV: filepath.Join(dir, "swarm", "bench.tsv")})
	if err != nil {
		t.Fatal(err)
	}
	if got.Convergence == nil || !reflect.DeepEqual(got.Convergence.JoinToReplyS, conv.JoinToReplyS) || got.Convergence.Date.IsZero() {
		t.Errorf("convergence read back as %+v, want %+v", got.Convergence, conv)
	}
	if got.Scale == nil || !reflect.DeepEqual(got.Scale.Runs, scale.Runs) {
		t.Errorf("scale read back as %+v, want %+v", got.Scale, scale)
	}
	if got.Throughput != nil || got.Encryption != nil || got.Docker != nil || got.Swarm != nil {
		t.Errorf("benchmarks without files read as present: %+v", got)
	}
	if err := os.WriteFile(filepath.Join(dir, ThroughputName+".json"), []byte(`{"sides": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Sources{Dir: dir}); err == nil || !strings.Contains(err.Error(), "throughput.json") {
		t.Errorf("a damaged throughput.json: error %v, want one naming it", err)
	}
}
