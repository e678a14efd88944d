package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/swarmdb/swarmdb/db"
)

// LoadUser reads a ToolDb account from path, or creates one there (mode
// 0600, its directory 0700) when the file does not exist. path "" means a
// fresh account that is not kept. The file is ToolDb's exported keys
// {"pub","priv"}; a node's identity.json (its "tooldb" member) is read
// too, to write as the node.
func LoadUser(path string) (*User, error) {
	if path == "" {
		return db.NewUser(nil)
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createUser(path)
	}
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	var f struct {
		db.Keys
		ToolDb *db.Keys `json:"tooldb"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	keys := f.Keys
	if f.ToolDb != nil {
		keys = *f.ToolDb
	}
	u, err := db.ImportKeys(keys)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return u, nil
}

func createUser(path string) (*db.User, error) {
	u, err := db.NewUser(nil)
	if err != nil {
		return nil, err
	}
	keys, err := u.ExportKeys()
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
	}
	// O_EXCL: two runs creating the same file must not both win.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadUser(path)
	}
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return nil, fmt.Errorf("key file: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return u, nil
}
