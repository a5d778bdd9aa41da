package benchdata

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Sources says where a report's results are.
type Sources struct {
	// Dir is vxlab bench's results directory (build/bench).
	Dir string
	// DockerGlob matches scripts/bench.sh's TSVs
	// (build/bench-docker-*.tsv).
	DockerGlob string
	// SwarmTSV is the swarm lab's (build/bench/swarm-bench.tsv, copied from build/swarm-lab/logs/bench.tsv).
	SwarmTSV string
}

// Results is every benchmark's figures found; a nil or empty field is a
// benchmark that was not run (or whose results are gone).
type Results struct {
	Convergence *Convergence
	Scale       *Scale
	Throughput  *Throughput
	Encryption  *Encryption
	Sim         *Sim
	// Docker: one entry per engine, in the order of the file names.
	Docker []DockerRuns
	Swarm  *Swarm
}

// Load reads whatever results src points at. A missing file is a
// benchmark not run; an unreadable one is an error, since a report that
// silently left it out would look complete.
func Load(src Sources) (Results, error) {
	var r Results
	var errs []error
	if src.Dir != "" {
		r.Convergence = load[Convergence](src.Dir, ConvergenceName, &errs)
		r.Scale = load[Scale](src.Dir, ScaleName, &errs)
		r.Throughput = load[Throughput](src.Dir, ThroughputName, &errs)
		r.Encryption = load[Encryption](src.Dir, EncryptionName, &errs)
		r.Sim = load[Sim](src.Dir, SimName, &errs)
	}
	if src.DockerGlob != "" {
		files, err := filepath.Glob(src.DockerGlob)
		if err != nil {
			errs = append(errs, fmt.Errorf("docker results %q: %w", src.DockerGlob, err))
		}
		slices.Sort(files)
		for _, f := range files {
			d, err := ReadDocker(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("docker results: %w", err))
				continue
			}
			r.Docker = append(r.Docker, d)
		}
	}
	if src.SwarmTSV != "" {
		s, err := ReadSwarm(src.SwarmTSV)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			errs = append(errs, fmt.Errorf("swarm lab results: %w", err))
		default:
			r.Swarm = &s
		}
	}
	return r, errors.Join(errs...)
}

func load[T any](dir, name string, errs *[]error) *T {
	v := new(T)
	ok, err := read(dir, name, v)
	if err != nil {
		*errs = append(*errs, err)
		return nil
	}
	if !ok {
		return nil
	}
	return v
}
