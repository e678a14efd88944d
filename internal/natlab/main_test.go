package natlab_test

import (
	"testing"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestMain fails the run if any test leaves a goroutine behind: the
// reflector, processes' waiters and probe helpers must all be gone once
// each lab is torn down.
func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
