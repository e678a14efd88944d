package turnserver

import "errors"

var (
	// ErrCredentials means a TURN username is malformed or its password
	// does not match.
	ErrCredentials = errors.New("turnserver: bad credentials")
	// ErrExpired means a TURN username's expiry has passed.
	ErrExpired = errors.New("turnserver: credentials expired")
	// ErrNoPublicIP means the relay address to advertise is unknown: the
	// server listens on an unspecified IP and Config.PublicIP is zero.
	ErrNoPublicIP = errors.New("turnserver: relay address unknown (set PublicIP)")
	// ErrLimit means an allocation was refused by MaxAllocations or
	// MaxAllocationsPerIP.
	ErrLimit = errors.New("turnserver: allocation limit reached")
	// ErrState means Start was called twice or after Close.
	ErrState = errors.New("turnserver: already started or closed")
)
