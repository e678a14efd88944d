package holepunch_test

import (
	"testing"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

// TestMain fails the run if any test leaves a goroutine behind (an ICE
// agent, a punch's sockets, a TURN allocation) that no per-test check
// caught.
func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
