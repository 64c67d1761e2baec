package tasks

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics registers the manager's collectors with reg: the tasks held by state
// (fleetrelay_tasks{state}) and those deleted because commands.retention passed
// (fleetrelay_tasks_pruned_total). They read Stats when scraped. Call it once per manager and
// registry: it panics if reg has them already.
func (m *Manager) RegisterMetrics(reg prometheus.Registerer) {
	cs := []prometheus.Collector{prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "fleetrelay_tasks_pruned_total",
		Help: "Command tasks in a final state deleted (store and memory) because commands.retention passed since they reached it.",
	}, func() float64 { return float64(m.Stats().Pruned) })}
	for state, f := range map[State]func(Stats) int{
		Queued:    func(s Stats) int { return s.Queued },
		Sent:      func(s Stats) int { return s.Sent },
		Succeeded: func(s Stats) int { return s.Succeeded },
		Failed:    func(s Stats) int { return s.Failed },
		Expired:   func(s Stats) int { return s.Expired },
	} {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "fleetrelay_tasks",
			Help:        "Command tasks held (in memory and in the store), by state; finished ones until commands.retention passed.",
			ConstLabels: prometheus.Labels{"state": string(state)},
		}, func() float64 { return float64(f(m.Stats())) }))
	}
	reg.MustRegister(cs...)
}
