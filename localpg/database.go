package localpg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// duplicateDatabase is SQLSTATE 42P04, what CREATE DATABASE fails with when
// the name is taken.
const duplicateDatabase = "42P04"

// CreateDatabase creates database name, copied from database template, or
// from the server's default template when template is "".
func (c *Cluster) CreateDatabase(ctx context.Context, name, template string) error {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	if err := c.exec(ctx, sql); err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// DropDatabase drops database name, disconnecting its sessions first
// (WITH (FORCE)). A database that does not exist is not an error, so that
// cleanups can call it unconditionally.
func (c *Cluster) DropDatabase(ctx context.Context, name string) error {
	if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	return nil
}

// EnsureDatabase creates database name unless it already exists, so that
// `make run` can point chatql at its database on every start.
func (c *Cluster) EnsureDatabase(ctx context.Context, name string) error {
	conn, err := c.connect(ctx)
	if err != nil {
		return fmt.Errorf("ensure database %q: %w", name, err)
	}
	defer conn.Close(ctx)

	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("ensure database %q: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == duplicateDatabase {
		return nil // someone else created it since we looked
	}
	if err != nil {
		return fmt.Errorf("ensure database %q: %w", name, err)
	}
	return nil
}

// exec runs one statement over its own short-lived superuser connection. The
// statements here (CREATE and DROP DATABASE) cannot run inside a transaction
// and are rare, so a pool would buy nothing.
func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// connect opens a superuser connection to the "postgres" database.
func (c *Cluster) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return nil, fmt.Errorf("connect to local postgres: %w", err)
	}
	return conn, nil
}
