//go:build race

package natlab_test

// raceSlowdown divides the delay line's capacity bounds (TestLink): under
// the race detector its per-frame Go code runs several times slower, and it
// forwarded 108-117 MiB/s where it forwards 183-200 without.
const raceSlowdown = 2
