package holepunch

// SetReleaseMemory replaces what an endpoint calls when a burst of work ends
// (memrelease.Note) and returns a func that restores it.
func SetReleaseMemory(f func()) (restore func()) {
	old := releaseMemory.Swap(&f)
	return func() { releaseMemory.Store(old) }
}
