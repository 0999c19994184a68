package web

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// writeResponse writes what gqlgen's transports wrote (encoding/json's
// Marshal of the response) for every shape of response.
func TestWriteResponseMatchesMarshal(t *testing.T) {
	t.Parallel()
	hasNext := true
	responses := map[string]*graphql.Response{
		"data":      {Data: json.RawMessage(`{"viewer":{"id":"1","names":["a","b"]}}`)},
		"no data":   {Errors: gqlerror.List{{Message: "no operation provided"}}},
		"null data": {Data: json.RawMessage(`null`), Errors: gqlerror.List{{Message: "boom", Path: ast.Path{ast.PathName("viewer")}}}},
		"everything": {
			Data:       json.RawMessage(`{"a":1}`),
			Errors:     gqlerror.List{{Message: "one", Extensions: map[string]any{"code": "X"}}, {Message: "two"}},
			Label:      "deferred",
			Path:       ast.Path{ast.PathName("a"), ast.PathIndex(2)},
			HasNext:    &hasNext,
			Extensions: map[string]any{"complexity": 3},
		},
	}
	for name, resp := range responses {
		want, err := json.Marshal(resp)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var got bytes.Buffer
		writeResponse(&got, resp)
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got.Bytes(), want)
		}
	}
}
