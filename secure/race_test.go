//go:build race

package secure

// raceEnabled: the race detector is on, and sync.Pool drops a quarter of what is put
// back on purpose, so allocation counts through a pool mean nothing.
const raceEnabled = true
