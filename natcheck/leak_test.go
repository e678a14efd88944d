package natcheck

import (
	"testing"

	"github.com/swarmdb/swarmdb/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyNoLeaks(m) }
