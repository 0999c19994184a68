package graph

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"time"

	"github.com/vektah/gqlparser/v2/formatter"
)

// SDL is the schema as clients see it through introspection, printed in
// the schema definition language: every type, field, argument and
// description, without the built-in scalars and directives every GraphQL
// server has. It comes from the executable schema rather than the source
// file, so it is what /query actually serves.
func SDL() []byte {
	var b bytes.Buffer
	formatter.NewFormatter(&b, formatter.WithIndent("  ")).FormatSchema(NewExecutableSchema(Config{}).Schema())
	return b.Bytes()
}

// SchemaHandler serves the SDL, for code generators (graphql-codegen,
// gqlgen's client generators) that take a schema file or URL. It reveals
// what introspection does, so it is refused (403, FORBIDDEN) when
// introspection is off. The body is fixed for the life of the process:
// it carries an ETag, and a client that has it gets 304.
func SchemaHandler(introspection bool) http.Handler {
	if !introspection {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{
				"message":    "introspection is disabled on this server, and with it the schema",
				"extensions": map[string]any{"code": CodeForbidden},
			}}})
		})
	}
	sdl := SDL()
	sum := sha256.Sum256(sdl)
	etag := `"` + hex.EncodeToString(sum[:16]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, "schema.graphql", time.Time{}, bytes.NewReader(sdl))
	})
}
