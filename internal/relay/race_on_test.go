//go:build race

package relay_test

// raceEnabled: the race detector slows the relay and its clients down several times over, so
// the heaviest tests run smaller (their full size runs without it).
const raceEnabled = true
