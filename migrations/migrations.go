// Package migrations owns the database schema: versioned SQL files embedded in
// the binary and applied with goose.
//
// Migrations run over their own short-lived connection, never through the
// application pool, so they cannot eat into the pool's budget. A Postgres
// advisory lock serialises concurrent runs, so several replicas starting at
// once apply each migration exactly once.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed sql/*.sql
var files embed.FS

// Up applies every pending migration to the database at databaseURL and
// returns the schema version it ends at.
func Up(ctx context.Context, databaseURL string, logger *slog.Logger) (int64, error) {
	provider, db, err := open(databaseURL, logger)
	if err != nil {
		return 0, err
	}
	defer db.Close()

	results, err := provider.Up(ctx)
	if err != nil {
		return 0, fmt.Errorf("apply migrations: %w", err)
	}
	for _, r := range results {
		logger.Info("migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	version, err := provider.GetDBVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}

func open(databaseURL string, logger *slog.Logger) (*goose.Provider, *sql.DB, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("parse database URL: %w", err)
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "chatql-migrate"
	}
	// No named prepared statements: a pooler may hand this client a server
	// connection that already has one of the same name (42P05).
	cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(1)

	sub, err := fs.Sub(files, "sql")
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("embedded migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("migration lock: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithSessionLocker(locker),
		goose.WithSlog(logger),
	)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("load migrations: %w", err)
	}
	return provider, db, nil
}

// Apply is Up for test harnesses (pgtest.Main's migrate): no log, no
// version.
func Apply(ctx context.Context, databaseURL string) error {
	_, err := Up(ctx, databaseURL, slog.New(slog.DiscardHandler))
	return err
}
