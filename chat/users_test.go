package chat_test

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"chatql/auth"
	"chatql/chat"
	"chatql/dbpool"
)

// TestAccounts checks how users come to be and sign in: provisioning,
// sign-up and sign-in, on one world.
func TestAccounts(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	// Not parallel, so that it finishes before the others start: it
	// compares the whole users table, which provisioning adds to.
	t.Run("SignUp", func(t *testing.T) { testSignUp(t, w) })
	t.Run("Provision", func(t *testing.T) { testProvision(t, w) })
	t.Run("SignIn", func(t *testing.T) { testSignIn(t, w) })
}

// testUsersByID: any user may be looked up, whatever conversations they are
// in or were removed from; ids of no user are absent.
func testUsersByID(t *testing.T, w *world) {
	t.Parallel()
	unknown := uuid.NewString()
	tests := []struct {
		name string
		ids  []string
		want []chat.User
	}{
		{name: "one", ids: userIDs(w.alice), want: []chat.User{w.alice}},
		{name: "removed participant", ids: userIDs(w.dave), want: []chat.User{w.dave}},
		{name: "known and unknown", ids: []string{w.eve.ID, unknown, w.bob.ID}, want: []chat.User{w.bob, w.eve}},
		{name: "unknown only", ids: []string{unknown}},
		{name: "none", ids: []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := chat.UsersByID(t.Context(), w.db, tt.ids)
			if err != nil {
				t.Fatalf("UsersByID: %v", err)
			}
			if keys, want := sortedKeys(got), sorted(userIDs(tt.want...)); !slices.Equal(keys, want) {
				t.Fatalf("keys = %v, want %v", keys, want)
			}
			for _, u := range tt.want {
				if g := got[u.ID]; !sameUser(g, u) {
					t.Errorf("loaded %+v, want %+v", g, u)
				}
			}
		})
	}
}

// testUserByID: the viewer check's lookup of one user finds any user, and
// says plainly when there is none.
func testUserByID(t *testing.T, w *world) {
	t.Parallel()
	for _, u := range []chat.User{w.alice, w.dave} {
		got, ok, err := chat.UserByID(t.Context(), w.db, u.ID)
		if err != nil || !ok || !sameUser(got, u) {
			t.Errorf("UserByID(%s) = %+v, %v, %v; want %+v", u.DisplayName, got, ok, err, u)
		}
	}
	got, ok, err := chat.UserByID(t.Context(), w.db, uuid.NewString())
	if err != nil || ok {
		t.Errorf("UserByID(unknown) = %+v, %v, %v; want not found and no error", got, ok, err)
	}
}

// testProvision: the first request of an identity creates its user, later
// ones get the same user; an email another account has (in any case) is
// ErrConflict and creates nobody.
func testProvision(t *testing.T, w *world) {
	t.Parallel()
	provision := func(t *testing.T, id auth.Identity) (chat.User, error) {
		t.Helper()
		return chat.Provision(t.Context(), w.db, id)
	}

	t.Run("bad emails in the token", func(t *testing.T) {
		t.Parallel()
		// Counted by id: the other subtests provision users meanwhile.
		var ids []string
		for _, email := range []string{"x", "@example.com", "nul\x00@example.com", strings.Repeat("a", 10000) + "@example.com", "two words@example.com"} {
			id := uuid.NewString()
			ids = append(ids, id)
			_, err := provision(t, auth.Identity{UserID: id, Supabase: true, Email: email})
			var input *chat.InputError
			if !errors.As(err, &input) || input.Field != "email" {
				t.Errorf("email %.40q: err = %v, want an *InputError on email", email, err)
			}
		}
		stored, err := dbpool.CollectOne(t.Context(), w.db, "SELECT count(*)::int FROM users WHERE id = ANY($1::uuid[])", []any{ids}, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		if stored != 0 {
			t.Errorf("%d users stored from bad tokens", stored)
		}
		// A name that cannot be stored as given is cleaned, not refused.
		u, err := provision(t, auth.Identity{UserID: uuid.NewString(), Supabase: true, Email: "nia@example.com", Name: "Ni\x00a"})
		if err != nil || u.DisplayName != "Nia" {
			t.Errorf("name with a NUL: %+v, %v; want Nia", u, err)
		}
	})

	t.Run("first and later requests", func(t *testing.T) {
		t.Parallel()
		id := auth.Identity{UserID: uuid.NewString(), Supabase: true, Email: " pia@example.com ", Name: "Pia"}
		first, err := provision(t, id)
		if err != nil {
			t.Fatalf("Provision: %v", err)
		}
		if first.ID != id.UserID || first.Email != "pia@example.com" || first.DisplayName != "Pia" {
			t.Errorf("provisioned %+v", first)
		}
		id.Name = "Patricia" // a later token may say otherwise; the user stays
		again, err := provision(t, id)
		if err != nil {
			t.Fatalf("Provision again: %v", err)
		}
		if !sameUser(again, first) {
			t.Errorf("provisioned again %+v, want %+v", again, first)
		}
	})

	t.Run("without email or name", func(t *testing.T) {
		t.Parallel()
		id := auth.Identity{UserID: uuid.NewString(), Supabase: true}
		u, err := provision(t, id)
		if err != nil {
			t.Fatalf("Provision: %v", err)
		}
		if u.ID != id.UserID || u.Email != "" || u.DisplayName != "User "+id.UserID[:8] {
			t.Errorf("provisioned %+v", u)
		}
	})

	t.Run("anonymous", func(t *testing.T) {
		t.Parallel()
		id := auth.Identity{UserID: uuid.NewString(), Supabase: true, Anonymous: true}
		u, err := provision(t, id)
		if err != nil {
			t.Fatalf("Provision: %v", err)
		}
		if u.Email != "" || u.DisplayName != "Guest "+id.UserID[:8] {
			t.Errorf("provisioned %+v", u)
		}
		// Two users without email: the unique index allows any number.
		other, err := provision(t, auth.Identity{UserID: uuid.NewString(), Supabase: true, Anonymous: true})
		if err != nil || other.Email != "" {
			t.Errorf("a second anonymous user: %+v, %v", other, err)
		}
	})

	t.Run("an email taken in another case", func(t *testing.T) {
		t.Parallel()
		id := auth.Identity{UserID: uuid.NewString(), Supabase: true, Email: "ALICE@example.com", Name: "Not Alice"}
		if _, err := provision(t, id); !errors.Is(err, chat.ErrConflict) {
			t.Errorf("err = %v, want ErrConflict", err)
		}
		got, err := chat.UsersByID(t.Context(), w.db, []string{id.UserID, w.alice.ID})
		if err != nil {
			t.Fatalf("UsersByID: %v", err)
		}
		if _, ok := got[id.UserID]; ok {
			t.Error("the refused identity got a user")
		}
		if !sameUser(got[w.alice.ID], w.alice) {
			t.Errorf("alice is now %+v, want %+v", got[w.alice.ID], w.alice)
		}
	})

	t.Run("concurrent first requests", func(t *testing.T) {
		t.Parallel()
		id := auth.Identity{UserID: uuid.NewString(), Supabase: true, Email: "sam@example.com"}
		const n = 8
		users := make([]chat.User, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				errs[i] = w.pool.WithConn(t.Context(), func(db dbpool.DB) error {
					var err error
					users[i], err = chat.Provision(t.Context(), db, id)
					return err
				})
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Errorf("request %d: %v", i, errs[i])
			} else if !sameUser(users[i], users[0]) || users[i].ID != id.UserID {
				t.Errorf("request %d got %+v, request 0 %+v", i, users[i], users[0])
			}
		}
	})
}

// testSignUp: an email is registered once, whatever its case and spacing;
// a second sign-up is ErrConflict and stores nothing.
func testSignUp(t *testing.T, w *world) {
	// One account only: NewAccount hashes at the real cost.
	account, err := chat.NewAccount(t.Context(), auth.NewPasswords(1, 0), chat.SignUpInput{Email: " Alice@EXAMPLE.com ", Password: "another password", DisplayName: "Other"})
	if err != nil {
		t.Fatalf("NewAccount: %v", err)
	}
	before := w.count(t, "users")
	if _, err := chat.CreateUser(t.Context(), w.db, account); !errors.Is(err, chat.ErrConflict) {
		t.Errorf("err = %v, want ErrConflict", err)
	}
	if n := w.count(t, "users"); n != before {
		t.Errorf("users %d -> %d after a refused sign-up", before, n)
	}
}

// testSignIn: signing in takes the right password for a registered email,
// in any case; a wrong password, an unknown email and an account without a
// password are all ErrBadCredentials, with no user.
func testSignIn(t *testing.T, w *world) {
	t.Parallel()
	const password = "correct horse"
	pat := w.newUserWithPassword(t, "Pat", password)
	passwords := auth.DefaultPasswords()
	tests := []struct {
		name, email, password string
		ok                    bool
	}{
		{name: "right password", email: "  Pat@EXAMPLE.com ", password: password, ok: true},
		{name: "wrong password", email: pat.Email, password: "wrong horse"},
		{name: "unknown email", email: "nobody@example.com", password: password},
		{name: "account without a password", email: w.alice.Email, password: password},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			creds, err := chat.LookupCredentials(t.Context(), w.db, tt.email)
			if err != nil {
				t.Fatalf("LookupCredentials: %v", err)
			}
			u, err := creds.Check(t.Context(), passwords, tt.password)
			switch {
			case tt.ok && err != nil:
				t.Errorf("Check: %v", err)
			case tt.ok && !sameUser(u, pat):
				t.Errorf("signed in as %+v, want %+v", u, pat)
			case !tt.ok && !errors.Is(err, chat.ErrBadCredentials):
				t.Errorf("err = %v, want ErrBadCredentials", err)
			case !tt.ok && !sameUser(u, chat.User{}):
				t.Errorf("a refused sign-in returned %+v", u)
			}
		})
	}
}
