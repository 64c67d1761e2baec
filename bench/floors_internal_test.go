package bench

import "testing"

// Medians are taken per figure over each target's runs, whatever the order the runs came in,
// and the ratios divide the relay's medians by its floors'.
func TestCompareMedians(t *testing.T) {
	c := &Comparison{Runs: []Figures{
		{Target: TargetRelay, Run: 1, CPUPerFrameUs: 90, AckP99Ms: 30, DeliveredPerSec: 100, RSSPeakMiB: 80, Lost: 0},
		{Target: FloorAck, Run: 1, CPUPerFrameUs: 30, AckP99Ms: 10, RSSPeakMiB: 20},
		{Target: FloorPipeline, Run: 1, CPUPerMsgUs: 9, DeliveredPerSec: 200},
		{Target: TargetRelay, Run: 2, CPUPerFrameUs: 120, AckP99Ms: 10, DeliveredPerSec: 300, RSSPeakMiB: 60, Lost: 2},
		{Target: FloorAck, Run: 2, CPUPerFrameUs: 20, AckP99Ms: 5, RSSPeakMiB: 10},
		{Target: FloorPipeline, Run: 2, CPUPerMsgUs: 7, DeliveredPerSec: 100},
		{Target: TargetRelay, Run: 3, CPUPerFrameUs: 100, AckP99Ms: 20, DeliveredPerSec: 200, RSSPeakMiB: 70, Lost: 1},
		{Target: FloorAck, Run: 3, CPUPerFrameUs: 25, AckP99Ms: 40, RSSPeakMiB: 30},
		{Target: FloorPipeline, Run: 3, CPUPerMsgUs: 8, DeliveredPerSec: 400},
	}}
	c.compare()
	r := c.Relay
	if r.Target != TargetRelay || r.Run != 0 || r.CPUPerFrameUs != 100 || r.AckP99Ms != 20 || r.DeliveredPerSec != 200 || r.RSSPeakMiB != 70 || r.Lost != 2 {
		t.Errorf("relay medians %+v", r)
	}
	if a := c.Ack; a == nil || a.CPUPerFrameUs != 25 || a.AckP99Ms != 10 || a.RSSPeakMiB != 20 {
		t.Errorf("ACK floor medians %+v", a)
	}
	if p := c.Pipe; p == nil || p.DeliveredPerSec != 200 || p.CPUPerMsgUs != 8 {
		t.Errorf("pipeline floor medians %+v", p)
	}
	want := Ratios{Base: FloorAck, CPUPerFrame: 4, AckP99: 2, RSSPeak: 3.5, Delivered: 1}
	if c.Ratios != want {
		t.Errorf("ratios %+v, want %+v", c.Ratios, want)
	}

	// Without an ACK floor (NDJSON), CPU and memory are read against the pipeline floor.
	c = &Comparison{Runs: []Figures{{Target: TargetRelay, CPUPerMsgUs: 3, RSSPeakMiB: 600}, {Target: FloorPipeline, CPUPerMsgUs: 1, RSSPeakMiB: 60}}}
	c.compare()
	if c.Ratios.Base != FloorPipeline || c.Ratios.CPUPerMsg != 3 || c.Ratios.RSSPeak != 10 || c.Ratios.CPUPerMsgPipe != 3 {
		t.Errorf("ratios without an ACK floor %+v", c.Ratios)
	}
}
