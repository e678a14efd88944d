package main

import (
	"context"
	"errors"
)

func runNAT(ctx context.Context, o options, sw swarmdbBin) (*PartResult, error) {
	return nil, errors.New("not implemented yet")
}
