package main

import (
	"testing"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestMain fails the run if a test leaves a goroutine behind: Proc's
// readers of a child's output, the parts' watchers and samplers.
func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
