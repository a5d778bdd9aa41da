package benchreport

import (
	"fmt"

	"github.com/vxsec/vxsec/internal/benchdata"
)

func (rp *report) sim(s *benchdata.Sim) error {
	const title = "Scale, simulated: the gossip layer to 200 hosts"
	if s == nil || len(s.Runs) == 0 {
		rp.notRun(title, "`"+rp.resultFile(benchdata.SimName)+"`", "`vxlab bench -only sim -results DIR`")
		return nil
	}
	rp.section(title)
	fmt.Fprintf(&rp.md, "Method: every host is vxsec's real gossip layer (serf and memberlist on vxsec's transport, the cluster secret, "+
		"table pulls with their ephemeral exchange, tables signed and verified with a host certificate each) on its own loopback "+
		"address, all in one process; what a daemon would make of a table in the kernel is left out (counted, not applied). Once "+
		"every host sees every member alive, every host adds its %d endpoints, one every %s, each a new table version. Convergence: "+
		"every host holds every other host's endpoints. CPU is the process's over that window; bytes are what the loopback carried.\n\n",
		s.PerHost, msf(s.PaceS))
	rp.measured(s.Meta, rp.resultFile(benchdata.SimName))
	rp.md.WriteString("| hosts | every host had every entry | after the last endpoint | CPU s | tables installed per host | of them from deltas | pulls served per host | loopback | idle cluster |\n")
	rp.md.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var hosts, conv, after, cpu, mib []float64
	for _, r := range s.Runs {
		fmt.Fprintf(&rp.md, "| %d | %s | %s | %.1f | %.1f | %.1f | %.1f | %s | %.2f CPUs |\n", r.Hosts, sf(r.ConvergedS), sf(r.AfterLastS),
			r.CPUS, r.TablesPerHost, r.DeltasPerHost, r.PullsPerHost, mibf(r.LoopbackBytes), r.IdleCPUs)
		hosts = append(hosts, float64(r.Hosts))
		conv = append(conv, r.ConvergedS)
		after = append(after, r.AfterLastS)
		cpu = append(cpu, r.CPUS)
		mib = append(mib, float64(r.LoopbackBytes)/(1<<20))
	}
	rp.md.WriteString("\nNo goal: the simulation shows how the gossip layer's cost grows with the cluster where the lab cannot go. " +
		"A change of endpoints alone travels as a delta, signed, in one UDP packet to every member; a host pulls another's " +
		"table when it missed a delta, or when more than endpoints, networks and IPsec state changed. Every host still installs every version of every " +
		"other host's table, so tables per host grow with the hosts, and the whole cluster's work with their square; a delta " +
		"costs a receiver one signature checked, a pull a connection, a key exchange and three.\n\n")
	last := s.Runs[len(s.Runs)-1]
	rp.rows = append(rp.rows, summaryRow{title,
		fmt.Sprintf("%d hosts × %d: %s, %.1f CPU s", last.Hosts, s.PerHost, sf(last.ConvergedS), last.CPUS), "none (how it grows)", "shown"})
	p, err := curves("Simulated convergence by host count", "hosts", "seconds", []curve{
		{"every host had every entry", hosts, conv},
		{"after the last endpoint", hosts, after},
	})
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if err := rp.image(p, "sim-convergence.svg", "simulated convergence by host count"); err != nil {
		return err
	}
	p, err = curves("Simulated cost by host count", "hosts", "CPU seconds; MiB", []curve{
		{"CPU seconds to convergence", hosts, cpu},
		{"MiB on the loopback", hosts, mib},
	})
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	return rp.image(p, "sim-cost.svg", "simulated CPU and bytes by host count")
}
