package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Machine describes where the numbers were measured.
type Machine struct {
	CPU      string            `json:"cpu"`
	Cores    int               `json:"cores"`
	MemoryGB float64           `json:"memory_gb"`
	Kernel   string            `json:"kernel"`
	Go       string            `json:"go"`
	Node     string            `json:"node"`
	Commit   string            `json:"commit"`
	Packages map[string]string `json:"packages"`
	Root     bool              `json:"root"`
}

// jsPackages are the npm packages whose versions the report names.
var jsPackages = []string{"hyperswarm", "hyperdht", "dht-rpc", "udx-native", "@hyperswarm/secret-stream",
	"tool-db", "@tool-db/ecdsa-user", "@tool-db/leveldb-store", "leveldown"}

func describeMachine(ctx context.Context, o options) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), Packages: map[string]string{}, Root: os.Geteuid() == 0}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				var kb float64
				for _, f := range strings.Fields(v)[:1] {
					for _, c := range f {
						kb = kb*10 + float64(c-'0')
					}
				}
				m.MemoryGB = kb / (1 << 20)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.CommandContext(ctx, "node", "--version").Output(); err == nil {
		m.Node = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, "git", "-C", o.root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	for _, p := range jsPackages {
		b, err := os.ReadFile(filepath.Join(o.js, "node_modules", p, "package.json"))
		if err != nil {
			continue
		}
		var pkg struct{ Version string }
		if json.Unmarshal(b, &pkg) == nil {
			m.Packages[p] = pkg.Version
		}
	}
	return m
}
