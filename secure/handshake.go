package secure

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"github.com/flynn/noise"
)

// The one cipher suite of the handshake. Fixed: there is no negotiation to downgrade.
// (The datagrams after it are sealed with a Cipher the handshake negotiates inside its
// authenticated payloads; see envelope.go.)
var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2b)

// ProtocolName is the Noise protocol this package speaks.
const ProtocolName = "Noise_IK_25519_ChaChaPoly_BLAKE2b"

// prologueLabel is mixed into every handshake before the caller's prologue, so a
// handshake of this protocol can never be confused with another use of the same keys.
const prologueLabel = "swarmdb/secure/1\x00"

// Sizes of the handshake's products.
const (
	KeySize  = 32 // a transport key: both Ciphers take 32-byte keys
	HashSize = 64 // BLAKE2b handshake hash
)

const (
	dhLen  = 32
	tagLen = 16
	// msg1 = e, s (encrypted), payload (encrypted); msg2 = e, payload (encrypted).
	maxMsg1Len = dhLen + dhLen + tagLen + msg1EnvelopeHeader + MaxHandshakePayload + tagLen
	// The minimums are version 1's envelope, which had no cipher byte, so that an
	// older peer's messages are read far enough to be refused with the reason
	// (ErrVersion, envelope.go).
	minMsg1Len = dhLen + dhLen + tagLen + msg1EnvelopeHeader - 1 + tagLen
	maxMsg2Len = dhLen + msg2EnvelopeHeader + MaxHandshakePayload + tagLen
	minMsg2Len = dhLen + msg2EnvelopeHeader - 1 + tagLen
)

// Keys is what a completed handshake yields: one key per direction, the cipher the
// datagrams are sealed with, the handshake hash (a channel binding unique to this
// session) and the authenticated peer.
//
// Initiator.Send == Responder.Recv and Initiator.Recv == Responder.Send; both sides
// have the same Cipher.
type Keys struct {
	Send      [KeySize]byte
	Recv      [KeySize]byte
	Cipher    Cipher // negotiated in the handshake; the zero value is ChaCha20-Poly1305
	Hash      [HashSize]byte
	Remote    ed25519.PublicKey // the authenticated peer identity
	Initiator bool              // true on the side that wrote msg1; it becomes the transport's client
}

type handshakeStage uint8

const (
	stageStart handshakeStage = iota
	stageSent                 // initiator: msg1 written, waiting for msg2
	stageRead                 // responder: msg1 read, may write msg2
	stageDone
	stageFailed
)

// Initiator is the dialling side of a Noise IK handshake. It is a pure state machine:
// bytes in, bytes out, no I/O; the caller carries the messages (in DHT signaling). Not
// safe for concurrent use.
//
// Failure rules (STYLE §11): a msg2 that fails to authenticate, or is truncated, leaves
// the Initiator exactly as it was, so a forged or corrupted msg2 injected by a relay does
// not prevent the genuine one from completing the handshake. Once a msg2 has
// authenticated, anything wrong with it (unknown version, oversize payload, a cipher
// not offered) is fatal and every later call returns ErrHandshakeState.
type Initiator struct {
	// immutable after NewInitiator
	cfg      noise.Config
	remote   ed25519.PublicKey
	remoteX  []byte
	identity ed25519.PublicKey
	ephPriv  []byte
	offer    cipherSet // the outer ciphers msg1 offers

	stage     handshakeStage
	hs        *noise.HandshakeState
	msg1Plain []byte // msg1 envelope, to rebuild hs after a failed read
}

// NewInitiator starts a handshake from local to the peer whose identity is remote. The
// prologue must be byte-for-byte the one the responder passes to ReadMsg1 (for example,
// the topic key or signaling context); it is authenticated but not sent.
func NewInitiator(local ed25519.PrivateKey, remote ed25519.PublicKey, prologue []byte) (*Initiator, error) {
	return newInitiator(local, remote, prologue, rand.Reader, localCiphers)
}

// newInitiator is NewInitiator with the randomness and the offered ciphers as inputs
// (tests play a machine without AES with them).
func newInitiator(local ed25519.PrivateKey, remote ed25519.PublicKey, prologue []byte, rng io.Reader, offer cipherSet) (*Initiator, error) {
	static, err := staticKeypair(local)
	if err != nil {
		return nil, fmt.Errorf("secure: initiator local key: %w", err)
	}
	remoteX, err := X25519PublicKey(remote)
	if err != nil {
		return nil, fmt.Errorf("secure: initiator remote key: %w", err)
	}
	// The ephemeral private key is drawn here rather than inside flynn/noise so that the
	// state after msg1 can be rebuilt deterministically (see ReadMsg2). flynn/noise's
	// WriteMessage always draws the ephemeral from Config.Random (it ignores
	// Config.EphemeralKeypair), so writeMsg1 feeds it these bytes.
	ephPriv := make([]byte, dhLen)
	if _, err := io.ReadFull(rng, ephPriv); err != nil {
		return nil, fmt.Errorf("secure: ephemeral key: %w", err)
	}
	return &Initiator{
		cfg: noise.Config{
			CipherSuite:   cipherSuite,
			Pattern:       noise.HandshakeIK,
			Initiator:     true,
			Prologue:      fullPrologue(prologue),
			StaticKeypair: static,
			PeerStatic:    remoteX,
		},
		ephPriv:  ephPriv,
		offer:    offer | setOf(CipherChaCha20Poly1305),
		remote:   bytes.Clone(remote),
		remoteX:  remoteX,
		identity: bytes.Clone(local.Public().(ed25519.PublicKey)),
	}, nil
}

// WriteMsg1 returns handshake message 1 carrying payload (at most MaxHandshakePayload
// bytes), encrypted to the responder's static key. now is stamped into the message so
// the responder can reject replays (Responder.Timestamp), and the outer ciphers this
// machine does well are offered. It may be called once; to retransmit, resend the same
// bytes.
func (i *Initiator) WriteMsg1(now time.Time, payload []byte) ([]byte, error) {
	if i.stage != stageStart {
		return nil, fmt.Errorf("%w: WriteMsg1 twice", ErrHandshakeState)
	}
	if len(payload) > MaxHandshakePayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	i.msg1Plain = appendMsg1Envelope(nil, msg1Envelope{
		Identity: i.identity, Timestamp: now, Offer: i.offer, Payload: payload,
	})
	hs, msg, err := i.writeMsg1()
	if err != nil {
		i.stage = stageFailed
		return nil, err
	}
	i.hs, i.stage = hs, stageSent
	return msg, nil
}

// writeMsg1 builds a fresh handshake state and writes msg1 into it. With the same
// ephemeral key and envelope it yields the same state and bytes every time.
func (i *Initiator) writeMsg1() (*noise.HandshakeState, []byte, error) {
	cfg := i.cfg
	cfg.Random = bytes.NewReader(i.ephPriv)
	hs, err := noise.NewHandshakeState(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("secure: handshake state: %w", err)
	}
	msg, _, _, err := hs.WriteMessage(nil, i.msg1Plain)
	if err != nil {
		return nil, nil, fmt.Errorf("secure: write msg1: %w", err)
	}
	return hs, msg, nil
}

// ReadMsg2 reads the responder's message 2 and completes the handshake. It returns the
// responder's payload and the session keys, with the cipher the responder chose. The
// responder's identity is the key given to NewInitiator: IK authenticates it implicitly
// (only the holder of that key can compute the es and ss terms msg2's encryption
// depends on).
func (i *Initiator) ReadMsg2(msg []byte) ([]byte, Keys, error) {
	if i.stage != stageSent {
		return nil, Keys{}, fmt.Errorf("%w: ReadMsg2 in stage %d", ErrHandshakeState, i.stage)
	}
	if len(msg) < minMsg2Len || len(msg) > maxMsg2Len {
		return nil, Keys{}, fmt.Errorf("%w: msg2 of %d bytes", ErrHandshake, len(msg))
	}
	plain, cs1, cs2, err := i.hs.ReadMessage(nil, msg)
	if err != nil {
		// flynn/noise rolls back on a decryption failure but not on every error (a
		// low-order ephemeral fails inside DH after the hash was updated). Rebuild the
		// post-msg1 state from scratch so a failed read never leaves a trace.
		hs, _, rerr := i.writeMsg1()
		if rerr != nil {
			i.stage = stageFailed
			return nil, Keys{}, rerr
		}
		i.hs = hs
		return nil, Keys{}, fmt.Errorf("%w: msg2: %w", ErrHandshake, err)
	}
	// From here on the message is authentic: any problem is fatal.
	i.stage = stageFailed
	if cs1 == nil || cs2 == nil {
		return nil, Keys{}, fmt.Errorf("%w: msg2 did not complete the handshake", ErrHandshake)
	}
	if !bytes.Equal(i.hs.PeerStatic(), i.remoteX) {
		return nil, Keys{}, fmt.Errorf("%w: responder static key", ErrIdentityMismatch)
	}
	env, err := parseMsg2Envelope(plain)
	if err != nil {
		return nil, Keys{}, err
	}
	if !i.offer.has(env.Cipher) {
		return nil, Keys{}, fmt.Errorf("%w: responder chose %s", ErrCipher, env.Cipher)
	}
	k := Keys{Send: cs1.UnsafeKey(), Recv: cs2.UnsafeKey(), Cipher: env.Cipher, Remote: i.remote, Initiator: true}
	copy(k.Hash[:], i.hs.ChannelBinding())
	i.stage, i.hs = stageDone, nil
	return env.Payload, k, nil
}

// Responder is the answering side of a Noise IK handshake after msg1 has been read and
// authenticated. The caller inspects the remote key and payload (firewall, limits) and
// either calls WriteMsg2 or simply drops the Responder: refusing costs nothing more and
// sends nothing. Not safe for concurrent use.
type Responder struct {
	hs        *noise.HandshakeState
	remote    ed25519.PublicKey
	timestamp time.Time
	cipher    Cipher // chosen from msg1's offer
	stage     handshakeStage
}

// ReadMsg1 reads handshake message 1 addressed to local. It returns the initiator's
// authenticated Ed25519 identity and its payload. Every call builds fresh state, so a
// bad msg1 has no effect on anything (a failed read is never fatal). Of the outer
// ciphers msg1 offers it chooses AES-256-GCM if this machine does it well too, else
// ChaCha20-Poly1305. A msg1 of another envelope version is ErrVersion (envelope.go).
//
// The cost of a bad msg1 is two X25519 operations; callers that face floods should rate
// limit per source before calling it.
func ReadMsg1(local ed25519.PrivateKey, prologue, msg []byte) (*Responder, ed25519.PublicKey, []byte, error) {
	return readMsg1(local, prologue, msg, localCiphers)
}

// readMsg1 is ReadMsg1 choosing from the ciphers in accept (tests play a machine
// without AES with it).
func readMsg1(local ed25519.PrivateKey, prologue, msg []byte, accept cipherSet) (*Responder, ed25519.PublicKey, []byte, error) {
	if len(msg) < minMsg1Len || len(msg) > maxMsg1Len {
		return nil, nil, nil, fmt.Errorf("%w: msg1 of %d bytes", ErrHandshake, len(msg))
	}
	static, err := staticKeypair(local)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("secure: responder local key: %w", err)
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Pattern:       noise.HandshakeIK,
		Initiator:     false,
		Prologue:      fullPrologue(prologue),
		StaticKeypair: static,
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("secure: handshake state: %w", err)
	}
	plain, _, _, err := hs.ReadMessage(nil, msg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: msg1: %w", ErrHandshake, err)
	}
	env, err := parseMsg1Envelope(plain)
	if err != nil {
		return nil, nil, nil, err
	}
	claimed, err := X25519PublicKey(env.Identity)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("secure: msg1 identity: %w", err)
	}
	if !bytes.Equal(claimed, hs.PeerStatic()) {
		return nil, nil, nil, fmt.Errorf("%w: msg1 identity %x", ErrIdentityMismatch, []byte(env.Identity))
	}
	chosen, ok := env.Offer.choose(accept)
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: msg1 offers %#02x", ErrCipher, byte(env.Offer))
	}
	remote := bytes.Clone(env.Identity)
	r := &Responder{hs: hs, remote: remote, timestamp: env.Timestamp, cipher: chosen, stage: stageRead}
	return r, remote, bytes.Clone(env.Payload), nil
}

// RemotePublicKey is the initiator's authenticated identity.
func (r *Responder) RemotePublicKey() ed25519.PublicKey { return r.remote }

// Timestamp is the initiator's clock when it wrote msg1, to millisecond precision. The
// caller should reject a msg1 whose timestamp is not newer than the last one accepted
// from the same identity (as WireGuard does), which stops replayed msg1s from making
// this node spend ICE work.
func (r *Responder) Timestamp() time.Time { return r.timestamp }

// WriteMsg2 accepts the initiator: it returns handshake message 2 carrying payload (at
// most MaxHandshakePayload bytes) and the session keys. It may be called once; any error
// is fatal.
func (r *Responder) WriteMsg2(payload []byte) ([]byte, Keys, error) {
	if r.stage != stageRead {
		return nil, Keys{}, fmt.Errorf("%w: WriteMsg2 in stage %d", ErrHandshakeState, r.stage)
	}
	if len(payload) > MaxHandshakePayload {
		return nil, Keys{}, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(payload))
	}
	r.stage = stageFailed
	msg, cs1, cs2, err := r.hs.WriteMessage(nil, appendMsg2Envelope(nil, msg2Envelope{Cipher: r.cipher, Payload: payload}))
	if err != nil {
		return nil, Keys{}, fmt.Errorf("secure: write msg2: %w", err)
	}
	if cs1 == nil || cs2 == nil {
		return nil, Keys{}, fmt.Errorf("%w: msg2 did not complete the handshake", ErrHandshake)
	}
	// cs1 encrypts initiator→responder, cs2 responder→initiator (Noise §5.2 Split).
	k := Keys{Send: cs2.UnsafeKey(), Recv: cs1.UnsafeKey(), Cipher: r.cipher, Remote: r.remote}
	copy(k.Hash[:], r.hs.ChannelBinding())
	r.stage, r.hs = stageDone, nil
	return msg, k, nil
}

func staticKeypair(priv ed25519.PrivateKey) (noise.DHKey, error) {
	x, err := X25519PrivateKey(priv)
	if err != nil {
		return noise.DHKey{}, err
	}
	pub, err := x25519Public(x)
	if err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: x, Public: pub}, nil
}

func fullPrologue(p []byte) []byte {
	return append([]byte(prologueLabel), p...)
}
