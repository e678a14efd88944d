package secure

// Session protocol constants.
const (
	// sessionVersion is the first byte on stream 0, from client to server.
	sessionVersion = 3
	// streamOpen is the first byte on every other stream. The transport shows a stream
	// to the peer with its first frame; the opener sends this byte at once, so the
	// stream appears at the peer's AcceptStream before any data is written.
	streamOpen = 0
	// maxWireMessage bounds a message length read from the wire, whatever
	// the peer's MaxMessageSize, so a peer cannot make us allocate without
	// limit.
	maxWireMessage = 16 << 20
)

// Application error codes the session puts in the transport's CONNECTION_CLOSE,
// RESET_STREAM and STOP_SENDING frames.
const (
	codeClosed       = 0 // graceful: the session closed after everything was acknowledged
	codeAbort        = 1 // the session failed (dead peer, local error)
	codeStreamClosed = 0 // Stream.Close stopped reading, or the backlog was full
)
