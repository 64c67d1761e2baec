//go:build race

package store

// raceDetector is set when the race detector is on (see badgerRace).
const raceDetector = true
