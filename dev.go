package main

// Dev mode: what `make run` without DATABASE_URL adds to the wiring in
// server.go. A private PostgreSQL cluster in DATA_DIR/postgres, a JWT
// secret generated once and kept beside it, the demo users and their
// conversations, and a ready-made Authorization header for Alice, which
// the playground fills in.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"chatql/auth"
	"chatql/config"
	"chatql/demo"
	"chatql/localpg"
)

// openLocalDatabase starts the cluster in DATA_DIR/postgres (creating it
// on first use) and returns its "chatql" database.
func openLocalDatabase(ctx context.Context, cfg config.Config, logger *slog.Logger) (*database, error) {
	dir, err := filepath.Abs(filepath.Join(cfg.DataDir, "postgres"))
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	cluster, err := localpg.Open(ctx, localpg.Options{Dir: dir, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := cluster.Start(ctx); err != nil {
		return nil, err
	}
	url := cluster.URL("chatql")
	db := &database{url: url, directURL: cfg.DirectURL(url), local: cluster}
	if err := cluster.EnsureDatabase(ctx, "chatql"); err != nil {
		db.close(logger)
		return nil, err
	}
	return db, nil
}

// close stops the dev-mode cluster; it does nothing for DATABASE_URL.
func (d *database) close(logger *slog.Logger) {
	if d.local == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.local.Stop(ctx); err != nil {
		logger.Error("stop local postgres", "err", err)
	}
}

// setUpDevMode fills in what dev mode adds to the API: tokens signed with
// JWT_SECRET or the kept dev secret, the demo data (seeded once), and the
// demo Authorization header, which it logs for pasting into other tools.
func (api *apiConfig) setUpDevMode(ctx context.Context) error {
	secret := api.cfg.JWTSecret
	if secret == "" {
		var err error
		if secret, err = devSecret(filepath.Join(api.cfg.DataDir, "jwt-secret")); err != nil {
			return err
		}
	}
	tokens, err := auth.NewTokens([]byte(secret), api.cfg.JWTTTL, api.tokenOptions...)
	if err != nil {
		return err
	}
	api.tokens = tokens
	seeded, err := demo.Seed(ctx, api.pool)
	if err != nil {
		return err
	}
	if seeded {
		api.logger.Info("demo data seeded", "users", len(demo.Users), "password", demo.Password)
	}
	id, err := demo.UserID(ctx, api.pool, demo.Users[0].Email)
	if err != nil {
		return err
	}
	token, _, err := tokens.Issue(id)
	if err != nil {
		return fmt.Errorf("issue demo token: %w", err)
	}
	api.demoHeader = "Bearer " + token
	api.logger.Info("demo Authorization header (signed in as "+demo.Users[0].Email+")", "header", "Authorization: "+api.demoHeader)
	return nil
}

// devSecret reads the secret at path, creating it on first use.
func devSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) >= config.MinJWTSecretLength {
		return string(b), nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate dev JWT secret: %w", err)
	}
	secret := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(secret), 0o600); err != nil {
		return "", fmt.Errorf("store dev JWT secret: %w", err)
	}
	return secret, nil
}

// playgroundHost turns a listen address into something a browser can open.
func playgroundHost(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		if ok {
			return fmt.Sprintf("localhost:%d", tcp.Port)
		}
		return addr.String()
	}
	return tcp.String()
}
