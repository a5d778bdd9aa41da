package benchdata

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DockerRuns is one engine's `docker run --rm` timings, as scripts/bench.sh
// writes them to build/bench-docker-<engine>.tsv (round, network, ms).
type DockerRuns struct {
	Engine string
	File   string
	// Modified is the file's time: the TSV holds no date of its own.
	Modified time.Time
	Runs     []DockerRun
}

// DockerRun is one timed `docker run --rm`.
type DockerRun struct {
	Round   int
	Network string
	MS      float64
}

// Swarm is the swarm lab's benchmark, build/swarm-lab/logs/bench.tsv
// (round, driver, seconds; no header).
type Swarm struct {
	File     string
	Modified time.Time
	// Mode is "vip" or "dnsrr" as bench.txt beside the TSV says, or ""
	// when it is not there.
	Mode string
	// WarmUp is the text's line about the untimed warm-up runs, "" when
	// the text has none (a benchmark before them, or no text).
	WarmUp string
	Runs   []SwarmRun
}

// SwarmRun is one service's creation to full reachability.
type SwarmRun struct {
	Round   int
	Driver  string
	Seconds float64
}

// ReadDocker reads one scripts/bench.sh TSV; the engine is the part of the
// name after "bench-docker-".
func ReadDocker(path string) (DockerRuns, error) {
	d := DockerRuns{File: path}
	base := strings.TrimSuffix(filepath.Base(path), ".tsv")
	d.Engine = strings.TrimPrefix(base, "bench-docker-")
	d.Modified = modified(path)
	err := eachRow(path, func(line int, f []string) error {
		if line == 1 && f[0] == "round" {
			return nil // the header
		}
		round, err := strconv.Atoi(f[0])
		if err != nil {
			return fmt.Errorf("round: %w", err)
		}
		ms, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			return fmt.Errorf("ms: %w", err)
		}
		d.Runs = append(d.Runs, DockerRun{Round: round, Network: f[1], MS: ms})
		return nil
	})
	return d, err
}

// ReadSwarm reads the swarm lab's bench.tsv (or its copy, swarm-bench.tsv),
// and its mode from the text beside it when present (bench.txt,
// swarm-bench.txt).
func ReadSwarm(path string) (Swarm, error) {
	s := Swarm{File: path, Modified: modified(path)}
	if b, err := os.ReadFile(strings.TrimSuffix(path, ".tsv") + ".txt"); err == nil {
		first, _, _ := strings.Cut(string(b), "\n")
		switch {
		case strings.Contains(first, "VIP mode"):
			s.Mode = "vip"
		case strings.Contains(first, "dnsrr"):
			s.Mode = "dnsrr"
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "warm-up") {
				s.WarmUp = strings.TrimSpace(line)
			}
		}
	}
	err := eachRow(path, func(_ int, f []string) error {
		round, err := strconv.Atoi(f[0])
		if err != nil {
			return fmt.Errorf("round: %w", err)
		}
		secs, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			return fmt.Errorf("seconds: %w", err)
		}
		s.Runs = append(s.Runs, SwarmRun{Round: round, Driver: f[1], Seconds: secs})
		return nil
	})
	return s, err
}

// modified is path's modification time, zero if it cannot be read (the
// read that follows then says why).
func modified(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime().UTC()
}

// eachRow calls f with the three fields of every non-empty line of a TSV.
func eachRow(path string, f func(line int, fields []string) error) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	return scanRows(file, path, f)
}

func scanRows(r io.Reader, path string, f func(line int, fields []string) error) error {
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.Split(line, "\t")
		if len(fields) != 3 {
			return fmt.Errorf("%s:%d: %d fields, want 3", path, n, len(fields))
		}
		if err := f(n, fields); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}
