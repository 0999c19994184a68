package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
)

// IsSubscriptionFunc reports whether the operation that query and
// operationName select is a subscription. It is only a hint for choosing
// how to answer: a document that does not parse is not one.
type IsSubscriptionFunc func(query, operationName string) bool

// AccessTokenParam is the query parameter that carries the token of an SSE
// subscription over GET: a browser's EventSource cannot set headers.
const AccessTokenParam = "access_token"

// negotiation is the choice made for one request.
type negotiation struct {
	// json is the JSON type of the response (and of an error written
	// before a stream starts).
	json string
	// stream: the response is server-sent events.
	stream bool
}

type negotiationKey struct{}

// isSSE reports whether r was given server-sent events by negotiate.
func isSSE(r *http.Request) bool {
	n, ok := r.Context().Value(negotiationKey{}).(negotiation)
	return ok && n.stream
}

// negotiate decides the response's type from r's Accept header and hands
// gqlgen's transports a request that names only that type, so that they
// agree: gqlgen's own negotiation takes the first JSON type listed and
// ignores q, and its SSE transport takes any Accept that contains
// "text/event-stream". The rules (GraphQL over HTTP):
//   - JSON: see Negotiated.JSON.
//   - A subscription is streamed whenever text/event-stream is acceptable;
//     a query or a mutation only when it is strictly preferred to JSON.
//     Only then is the body read here (bounded like every body), to find
//     the operation's type.
//   - A GET that selects a subscription and accepts text/event-stream (a
//     browser's EventSource) is streamed too, as a POST of the same
//     parameters; its token may come as the access_token parameter, which
//     is then taken off the URL before anything else sees it.
//
// Websocket upgrades and other methods pass unchanged.
func negotiate(r *http.Request, n Negotiated, isSubscription IsSubscriptionFunc) (*http.Request, negotiation) {
	choice := negotiation{json: n.JSON}
	if r.Header.Get("Upgrade") != "" {
		return r, choice
	}
	switch r.Method {
	case http.MethodPost:
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != MediaJSON {
			break
		}
		switch {
		case n.StreamPreferred():
			choice.stream = true
		case n.StreamAcceptable() && isSubscription != nil:
			choice.stream = isSubscription(peekOperation(r))
		}
	case http.MethodGet:
		q := r.URL.Query()
		if !n.StreamAcceptable() || isSubscription == nil || !isSubscription(q.Get("query"), q.Get("operationName")) {
			break
		}
		choice.stream = true
		r = getAsPost(r, q)
	default:
		return r, choice
	}
	r = r.Clone(context.WithValue(r.Context(), negotiationKey{}, choice))
	if choice.stream {
		r.Header.Set("Accept", MediaEventStream)
	} else {
		r.Header.Set("Accept", choice.json)
	}
	return r, choice
}

// peekOperation reads r's body for its query and operationName and puts
// the body back for the transport to read again (with the read's error,
// if it failed, so that the transport reports it).
func peekOperation(r *http.Request) (query, operationName string) {
	if r.Body == nil {
		return "", ""
	}
	body, err := io.ReadAll(r.Body)
	r.Body = replayBody{Reader: bytes.NewReader(body), err: err, closer: r.Body}
	if err != nil {
		return "", ""
	}
	var params struct {
		Query         string `json:"query"`
		OperationName string `json:"operationName"`
	}
	_ = json.Unmarshal(body, &params)
	return params.Query, params.OperationName
}

// replayBody gives back a body already read, then the error that ended the
// read (io.EOF if none).
type replayBody struct {
	*bytes.Reader
	err    error
	closer io.Closer
}

func (b replayBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	if err == io.EOF && b.err != nil {
		err = b.err
	}
	return n, err
}

func (b replayBody) Close() error { return b.closer.Close() }

// getAsPost turns a GET's parameters into the POST gqlgen's SSE transport
// serves, taking the access_token parameter into the Authorization header
// (a header sent as well wins) and off the URL.
func getAsPost(r *http.Request, q url.Values) *http.Request {
	params := map[string]any{"query": q.Get("query")}
	if name := q.Get("operationName"); name != "" {
		params["operationName"] = name
	}
	for _, key := range []string{"variables", "extensions"} {
		if v := q.Get(key); v != "" {
			if json.Valid([]byte(v)) {
				params[key] = json.RawMessage(v)
			} else {
				params[key] = v // refused by the transport as it should be
			}
		}
	}
	body, _ := json.Marshal(params)
	token := q.Get(AccessTokenParam)
	q.Del(AccessTokenParam)

	r = r.Clone(r.Context())
	r.Method = http.MethodPost
	r.URL.RawQuery = q.Encode()
	r.RequestURI = r.URL.RequestURI()
	r.Header.Set("Content-Type", MediaJSON)
	if token != "" && r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return r
}
