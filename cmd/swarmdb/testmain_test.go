package main

import (
	"testing"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestMain fails the run if a test leaves a goroutine behind: the
// in-process commands (node, pipe, demo, netcheck) must stop everything
// they start when their context ends.
func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
