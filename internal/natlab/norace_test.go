//go:build !race

package natlab_test

// raceSlowdown: see race_test.go.
const raceSlowdown = 1
