package node

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/swarmdb/swarmdb/db"
)

// identityFile is where a node keeps its keys, inside the data directory.
const identityFile = "identity.json"

// identity is a node's two keys: the Ed25519 key that is its peer id on the
// swarm, and the ToolDb (ECDSA P-256) account that signs its peer
// descriptor and the records it writes.
type identity struct {
	swarm ed25519.PrivateKey
	user  *db.User
}

// identityJSON is the file format: {"swarm_seed": hex, "tooldb": {pub, priv}}.
type identityJSON struct {
	SwarmSeed string  `json:"swarm_seed"`
	ToolDb    db.Keys `json:"tooldb"`
}

// loadIdentity reads the identity in dir, or creates one (mode 0600) when
// there is none. A file that exists but does not parse is an error, never
// silently replaced: that would change the node's identity.
func loadIdentity(dir string) (identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createIdentity(path)
	case err != nil:
		return identity{}, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	var f identityJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return identity{}, fmt.Errorf("%w: %s: %w", ErrIdentity, path, err)
	}
	seed, err := hex.DecodeString(f.SwarmSeed)
	if err != nil || len(seed) != ed25519.SeedSize {
		return identity{}, fmt.Errorf("%w: %s: bad swarm_seed", ErrIdentity, path)
	}
	user, err := db.ImportKeys(f.ToolDb)
	if err != nil {
		return identity{}, fmt.Errorf("%w: %s: %w", ErrIdentity, path, err)
	}
	return identity{swarm: ed25519.NewKeyFromSeed(seed), user: user}, nil
}

func createIdentity(path string) (identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return identity{}, err
	}
	user, err := db.NewUser(rand.Reader)
	if err != nil {
		return identity{}, err
	}
	keys, err := user.ExportKeys()
	if err != nil {
		return identity{}, err
	}
	b, err := json.MarshalIndent(identityJSON{SwarmSeed: hex.EncodeToString(priv.Seed()), ToolDb: keys}, "", "  ")
	if err != nil {
		return identity{}, err
	}
	// Write to a temporary file and rename, so a crash never leaves a
	// half-written identity behind.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return identity{}, fmt.Errorf("node: write identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return identity{}, fmt.Errorf("node: write identity: %w", err)
	}
	return identity{swarm: priv, user: user}, nil
}
