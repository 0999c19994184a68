package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// POST and GET are the GraphQL-over-HTTP transports for JSON requests.
// They behave as gqlgen's transports of the same names do (v0.17.98, with
// no ResponseHeaders and UseGrapQLResponseJsonByDefault false): the same
// statuses, errors and bodies, which the tests compare. They differ in
// how a response is written: gqlgen marshals the whole graphql.Response
// with encoding/json, which scans and compacts the already-marshalled
// data a second time (a fifth of an Inbox's CPU); writeResponse writes it
// as it is. The response's JSON type is the one negotiated by Wrap.
type (
	POST struct{}
	GET  struct{}
)

var (
	_ graphql.Transport = POST{}
	_ graphql.Transport = GET{}
)

func (POST) Supports(r *http.Request) bool {
	if r.Header.Get("Upgrade") != "" {
		return false
	}
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && r.Method == http.MethodPost && mediaType == MediaJSON
}

func (POST) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	contentType := responseType(r)
	w.Header().Set("Content-Type", contentType)
	start := graphql.Now()

	body, err := io.ReadAll(r.Body)
	if err != nil {
		resp := exec.DispatchError(ctx, gqlerror.List{gqlerror.Errorf("could not read request body: %+v", err)})
		writeResponse(w, resp)
		return
	}
	params := &graphql.RawParams{}
	if err := jsonDecode(bytes.NewReader(body), params); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		resp := exec.DispatchError(ctx, gqlerror.List{gqlerror.Errorf(
			"json request body could not be decoded: %+v body:%s", err, string(body))})
		writeResponse(w, resp)
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}

	opCtx, opErr := exec.CreateOperationContext(ctx, params)
	if opErr != nil {
		w.WriteHeader(requestErrorStatus(contentType, opErr))
		writeResponse(w, exec.DispatchError(graphql.WithOperationContext(ctx, opCtx), opErr))
		return
	}
	responses, ctx := exec.DispatchOperation(ctx, opCtx)
	writeResponse(w, responses(ctx))
}

func (GET) Supports(r *http.Request) bool {
	return r.Header.Get("Upgrade") == "" && r.Method == http.MethodGet
}

func (GET) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeErrorMessage(w, err.Error())
		return
	}
	contentType := responseType(r)
	w.Header().Set("Content-Type", contentType)

	params := &graphql.RawParams{
		Query:         query.Get("query"),
		OperationName: query.Get("operationName"),
		Headers:       r.Header,
	}
	params.ReadTime.Start = graphql.Now()
	if variables := query.Get("variables"); variables != "" {
		if err := jsonDecode(strings.NewReader(variables), &params.Variables); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			writeErrorMessage(w, "variables could not be decoded")
			return
		}
	}
	if extensions := query.Get("extensions"); extensions != "" {
		if err := jsonDecode(strings.NewReader(extensions), &params.Extensions); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			writeErrorMessage(w, "extensions could not be decoded")
			return
		}
	}
	params.ReadTime.End = graphql.Now()

	opCtx, opErr := exec.CreateOperationContext(r.Context(), params)
	if opErr != nil {
		w.WriteHeader(requestErrorStatus(contentType, opErr))
		writeResponse(w, exec.DispatchError(graphql.WithOperationContext(r.Context(), opCtx), opErr))
		return
	}
	if op := opCtx.Doc.Operations.ForName(opCtx.OperationName); op.Operation != ast.Query {
		w.WriteHeader(http.StatusNotAcceptable)
		writeErrorMessage(w, "GET requests only allow query operations")
		return
	}
	responses, ctx := exec.DispatchOperation(r.Context(), opCtx)
	writeResponse(w, responses(ctx))
}

// responseType is the JSON type negotiated for r (Wrap sets Accept to
// it, so negotiating again gives the same for a request that did not
// pass through Wrap's negotiation).
func responseType(r *http.Request) string {
	if n, ok := r.Context().Value(negotiationKey{}).(negotiation); ok && n.json != "" {
		return n.json
	}
	return Negotiate(r.Header.Get("Accept")).JSON
}

// requestErrorStatus is gqlgen's status for errors that stop an operation
// before it runs: protocol errors are 422 under application/json and 400
// under application/graphql-response+json (GraphQL over HTTP).
func requestErrorStatus(contentType string, errs gqlerror.List) int {
	if errcode.GetErrorKind(errs) != errcode.KindProtocol {
		return http.StatusOK
	}
	if contentType == MediaGraphQLResponse {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

func jsonDecode(r io.Reader, val any) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	return dec.Decode(val)
}

func writeErrorMessage(w io.Writer, msg string) {
	writeResponse(w, &graphql.Response{Errors: gqlerror.List{{Message: msg}}})
}

// writeResponse writes resp as encoding/json would (the same keys, in
// the same order, the same omissions), with data copied as it is: gqlgen
// produced it as valid, compact JSON. The only difference is that data's
// strings keep <, > and & unescaped, as gqlgen writes them; errors and
// extensions go through encoding/json as before. Data is written on its
// own, not copied into a buffer: the ResponseWriter buffers already.
func writeResponse(w io.Writer, resp *graphql.Response) {
	var head, tail bytes.Buffer
	head.WriteByte('{')
	if len(resp.Errors) > 0 {
		writeField(&head, "errors", resp.Errors)
		head.WriteByte(',')
	}
	head.WriteString(`"data":`)
	data := resp.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	if resp.Label != "" {
		tail.WriteByte(',')
		writeField(&tail, "label", resp.Label)
	}
	if len(resp.Path) > 0 {
		tail.WriteByte(',')
		writeField(&tail, "path", resp.Path)
	}
	if resp.HasNext != nil {
		tail.WriteByte(',')
		writeField(&tail, "hasNext", *resp.HasNext)
	}
	if len(resp.Extensions) > 0 {
		tail.WriteByte(',')
		writeField(&tail, "extensions", resp.Extensions)
	}
	tail.WriteByte('}')
	for _, b := range [][]byte{head.Bytes(), data, tail.Bytes()} {
		if _, err := w.Write(b); err != nil {
			return // the client is gone
		}
	}
}

// writeField writes "key":value; a value encoding/json cannot marshal is
// a bug in the server, as it is in gqlgen's writer.
func writeField(buf *bytes.Buffer, key string, value any) {
	b, err := json.Marshal(value)
	if err != nil {
		panic(fmt.Errorf("marshal the response's %s: %w", key, err))
	}
	buf.WriteString(`"` + key + `":`)
	buf.Write(b)
}
