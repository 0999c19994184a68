package graph

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"chatql/admission"
)

// TestWriteRefusalMatchesMarshal: the refusal body appended by hand is
// byte for byte what json.Marshal gives the same error, with the status,
// Retry-After and content type of each kind of refusal.
func TestWriteRefusalMatchesMarshal(t *testing.T) {
	for _, tc := range []struct {
		refused    *admission.RefusedError
		status     int
		code       string
		retryAfter string
		seconds    int
	}{
		{&admission.RefusedError{Reason: admission.ReasonServerBusy, RetryAfter: 1500 * time.Millisecond}, http.StatusServiceUnavailable, CodeOverloaded, "2", 2},
		{&admission.RefusedError{Reason: admission.ReasonPrincipalBusy, RetryAfter: time.Second}, http.StatusTooManyRequests, CodeRateLimited, "1", 1},
		{&admission.RefusedError{Reason: admission.ReasonQueueFull, RetryAfter: 42 * time.Second}, http.StatusTooManyRequests, CodeRateLimited, "42", 42},
		{&admission.RefusedError{Reason: admission.ReasonSubscriptions, RetryAfter: 10 * time.Second}, http.StatusTooManyRequests, CodeRateLimited, "10", 10},
	} {
		t.Run(string(tc.refused.Reason), func(t *testing.T) {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/query", nil)
			r.Header.Set("Accept", "application/graphql-response+json")
			writeRefusal(rec, r, tc.refused)

			_, message := classify(tc.refused)
			want, err := json.Marshal(map[string]any{"errors": []map[string]any{{
				"message":    message,
				"extensions": map[string]any{"code": tc.code, "retryAfter": tc.seconds},
			}}})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(rec.Body.Bytes(), want) {
				t.Errorf("body\n%s\nwant\n%s", rec.Body.Bytes(), want)
			}
			if rec.Code != tc.status || rec.Header().Get("Retry-After") != tc.retryAfter ||
				rec.Header().Get("Content-Type") != "application/graphql-response+json" || rec.Header().Get("Cache-Control") != "no-store" {
				t.Errorf("status %d, headers %v; want %d, Retry-After %s", rec.Code, rec.Header(), tc.status, tc.retryAfter)
			}
		})
	}
}
