package dbpool

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestClientCapRefusal: the refusals acquire tries again are those for a
// client limit, from PostgreSQL, PgBouncer or Supabase's pooler, however
// wrapped; other connect failures are reported at once.
func TestClientCapRefusal(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "53300", Message: "too many connections for role \"app\""}, true},
		{&pgconn.PgError{Code: "08P01", Message: "no more connections allowed (max_client_conn)"}, true},
		{&pgconn.PgError{Code: "XX000", Message: "(EMAXCONNSESSION) max clients reached in session mode - max clients are limited to pool_size: 15"}, true},
		{fmt.Errorf("connect: %w", &pgconn.PgError{Code: "53300"}), true},
		{&pgconn.PgError{Code: "28P01", Message: "password authentication failed for user \"app\""}, false},
		{&pgconn.PgError{Code: "3D000", Message: "database \"nope\" does not exist"}, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
	} {
		if got := isClientCapRefusal(tc.err); got != tc.want {
			t.Errorf("isClientCapRefusal(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
