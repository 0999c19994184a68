package load

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"

	"chatql/auth"
)

// HTTPCeilingHandler is the HTTP ceiling: a plain net/http handler that
// answers POST /query as chatql answers the Inbox query, with the same
// JSON, by FetchInbox. It verifies the bearer token as chatql does and
// decodes the request body, but parses no GraphQL: whatever the query, it
// answers the Inbox (20 conversations, 10 messages each).
func HTTPCeilingHandler(pool *pgxpool.Pool, tokens *auth.Tokens) http.Handler {
	type response struct {
		Data struct {
			Conversations struct {
				Edges []struct {
					Node *RawConversation `json:"node"`
				} `json:"edges"`
			} `json:"conversations"`
		} `json:"data"`
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /query", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Query     string         `json:"query"`
			Variables map[string]any `json:"variables"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		raw, ok, err := auth.FromHeader(r.Header.Get("Authorization"))
		if err != nil || !ok {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		id, err := tokens.Verify(r.Context(), raw)
		if err != nil {
			http.Error(w, "unauthenticated", http.StatusUnauthorized)
			return
		}
		convs, err := FetchInbox(r.Context(), pool, id.UserID, 20, 10)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		var resp response
		resp.Data.Conversations.Edges = make([]struct {
			Node *RawConversation `json:"node"`
		}, len(convs))
		for i, c := range convs {
			resp.Data.Conversations.Edges[i].Node = c
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
	return mux
}
