package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"chatql/localpg/pgtest"
)

// The client compatibility suite: the GraphQL clients frontends use, from
// npm at the versions clients/package-lock.json pins, against the built
// server (no -race: the clients' timings are the point, not the server's
// races, which the in-process tests cover). Each script in clients/ prints
// one JSON line, {"client", "ok", "checks": [{"name", "ok", ...}]}, and
// exits 0 only when every check passed. make test installs Node and runs
// npm ci; without Node the test fails under CI=true and is skipped
// otherwise.

// clientScripts are run in turn, each against the same server.
var clientScripts = []string{"apollo.mjs", "urql.mjs", "graphql-ws.mjs", "graphql-sse.mjs", "audit.mjs"}

func TestClients(t *testing.T) {
	skipInShort(t, "runs npm clients against the built server")
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node not found: the client suite needs Node.js 18 or later (make test installs it)")
		}
		t.Skip("node not found: install Node.js 18 or later, or run make test, for the client suite")
	}
	if _, err := os.Stat(filepath.Join("clients", "node_modules", ".package-lock.json")); err != nil {
		t.Fatal("clients/node_modules is missing: run `npm ci` in clients/ (make test does)")
	}
	p, _ := startChatql(t, pgtest.NewDatabase(t))
	for _, script := range clientScripts {
		t.Run(strings.TrimSuffix(script, ".mjs"), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, script, p.url())
			cmd.Dir = "clients"
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
			}
			var result struct {
				OK bool `json:"ok"`
			}
			line := strings.TrimSpace(string(out))
			if i := strings.LastIndexByte(line, '\n'); i >= 0 {
				line = line[i+1:]
			}
			if jerr := json.Unmarshal([]byte(line), &result); jerr != nil {
				t.Fatalf("node %s: output is not its JSON line (%v): %s\nstderr: %s\nserver logs:\n%s", script, jerr, out, stderr.String(), p.logs.String())
			}
			t.Logf("%s", line)
			if err != nil || !result.OK {
				t.Errorf("node %s failed (%v): %s\nstderr: %s\nserver logs:\n%s", script, err, line, stderr.String(), p.logs.String())
			}
		})
	}
}
