package db

import (
	"errors"
	"testing"
)

func TestParseAddressRefusesAliases(t *testing.T) {
	// The unused low bits of the 43rd character are set: a second spelling
	// of a key whose canonical address ends its first half in "...Q7E".
	alias := "0X28ZyAFcMDZgNf2gyUi_7jEQsdCUdlZ8V30ovPEQ7GtJ2WpDht4mECXbflsLu-ab1p-WQKa7ebp66-L2B-z5A"
	if _, err := ParseAddress(alias); !errors.Is(err, ErrInvalidAddress) {
		t.Fatalf("non-canonical address accepted: %v", err)
	}
}
