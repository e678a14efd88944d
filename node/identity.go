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

// Inside the data directory: the node's keys and its store.
const (
	identityFile = "identity.json"
	storeDir     = "db"
)

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

// loadIdentity reads the identity in dir. When there is none it makes a new
// one in memory (onDisk false; Start writes it), unless dir already holds a
// store: that store's records and peers belong to the lost identity, so a
// missing identity.json next to it is an error, never a silent new identity.
// A file that exists but does not parse is an error too.
func loadIdentity(dir string) (id identity, onDisk bool, err error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(filepath.Join(dir, storeDir)); serr == nil {
			return identity{}, false, fmt.Errorf("%w: %s is missing but %s holds a store: restore the file, or move %s away to start as a new node",
				ErrIdentity, path, dir, filepath.Join(dir, storeDir))
		}
		id, err := newIdentity()
		return id, false, err
	case err != nil:
		return identity{}, false, fmt.Errorf("%w: %w", ErrIdentity, err)
	}
	var f identityJSON
	if err := json.Unmarshal(b, &f); err != nil {
		return identity{}, false, fmt.Errorf("%w: %s: %w", ErrIdentity, path, err)
	}
	seed, err := hex.DecodeString(f.SwarmSeed)
	if err != nil || len(seed) != ed25519.SeedSize {
		return identity{}, false, fmt.Errorf("%w: %s: bad swarm_seed", ErrIdentity, path)
	}
	user, err := db.ImportKeys(f.ToolDb)
	if err != nil {
		return identity{}, false, fmt.Errorf("%w: %s: %w", ErrIdentity, path, err)
	}
	return identity{swarm: ed25519.NewKeyFromSeed(seed), user: user}, true, nil
}

func newIdentity() (identity, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return identity{}, err
	}
	user, err := db.NewUser(rand.Reader)
	if err != nil {
		return identity{}, err
	}
	return identity{swarm: priv, user: user}, nil
}

// save writes the identity into dir (mode 0600).
func (id identity) save(dir string) error {
	keys, err := id.user.ExportKeys()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(identityJSON{SwarmSeed: hex.EncodeToString(id.swarm.Seed()), ToolDb: keys}, "", "  ")
	if err != nil {
		return err
	}
	// Write to a temporary file and rename, so a crash never leaves a
	// half-written identity behind.
	path := filepath.Join(dir, identityFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("node: write identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("node: write identity: %w", err)
	}
	return nil
}
