package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"chatql/graph"
)

// BenchmarkInbox runs the Inbox query through the in-process handler (no
// network) on the inbox fixture: ns/op, allocs/op, and statements/op from
// the pgx tracer.
func BenchmarkInbox(b *testing.B) {
	a := newAPI(b)
	token := inboxFixture(a)
	handler := a.srv.Config.Handler
	body, _ := json.Marshal(map[string]any{"query": graph.InboxQuery})
	run := func() int {
		req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || bytes.Contains(rec.Body.Bytes(), []byte(`"errors"`)) {
			b.Fatalf("status %d: %.300s", rec.Code, rec.Body.Bytes())
		}
		return rec.Body.Len()
	}
	size := run()
	before := a.counter.n.Load()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		run()
	}
	b.StopTimer()
	b.ReportMetric(float64(a.counter.n.Load()-before)/float64(b.N), "statements/op")
	b.ReportMetric(float64(size), "response-bytes")
}
