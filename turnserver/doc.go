// Package turnserver is the TURN relay (RFC 8656, formerly RFC 5766) that
// public swarmdb nodes serve: the last path of a connection when both peers
// sit behind endpoint-dependent-mapping NATs. The relay only ever carries
// datagrams already sealed by package secure, so it learns who talks to
// whom and how much, never what.
//
// Credentials follow the "REST API for Access to TURN Services" draft
// (draft-uberti-behave-turn-rest-00, §2.2), the scheme coturn calls
// use-auth-secret: the node holding the secret hands out
//
//	username = "<unix expiry>:<tag>"
//	password = base64(HMAC-SHA1(secret, username))
//
// and the server recomputes the password from the username alone, so it
// keeps no per-user state and a credential dies at its expiry. The offer
// travels to clients over the DHT (dht.TURNOffer); the client side, which
// allocates on the relay as one more ICE candidate, is holepunch's.
//
// Users: node (Bootstrap, which `swarmdb bootstrap` runs) and tests.
// turnserver imports pion/turn and internal/pionlog only; it must not import
// dht, holepunch or anything above them.
package turnserver
