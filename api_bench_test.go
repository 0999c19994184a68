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
	// One response writer serves every request, as a connection's
	// buffered writer does: the allocations are the server's own.
	rec := &benchWriter{}
	run := func() int {
		req := httptest.NewRequest(http.MethodPost, "/query", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		rec.reset()
		handler.ServeHTTP(rec, req)
		if rec.code != http.StatusOK || bytes.Contains(rec.body.Bytes(), []byte(`"errors"`)) {
			b.Fatalf("status %d: %.300s", rec.code, rec.body.Bytes())
		}
		return rec.body.Len()
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

// benchWriter is a reusable http.ResponseWriter.
type benchWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *benchWriter) reset() {
	w.header, w.code = http.Header{}, 0
	w.body.Reset()
}

func (w *benchWriter) Header() http.Header { return w.header }

func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}
