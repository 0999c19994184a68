package document

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// CodePersistedQueryNotFound answers a hash the server does not know: the
// client then sends the query with it.
const CodePersistedQueryNotFound = "PERSISTED_QUERY_NOT_FOUND"

// PersistedQueries is automatic persisted queries (Apollo's protocol, as
// gqlgen's extension.AutomaticPersistedQuery speaks it:
// extensions.persistedQuery {version: 1, sha256Hash}), except that a query
// is remembered only once its operation was accepted: after the document
// limits, validation and the complexity limit. gqlgen's own extension
// stores the text as soon as it arrives, so that refused documents fill
// its cache too.
//
// It must be used before Guard, which checks the query it resolves.
type PersistedQueries struct {
	Cache graphql.Cache[string]
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
	graphql.OperationInterceptor
} = PersistedQueries{}

// statsKey is where the request's hash is kept until the operation is
// accepted: gqlgen's own key, so that extension.GetApqStats works.
const statsKey = "APQ"

func (PersistedQueries) ExtensionName() string { return "AutomaticPersistedQuery" }

func (PersistedQueries) Validate(graphql.ExecutableSchema) error { return nil }

func (a PersistedQueries) MutateOperationParameters(ctx context.Context, p *graphql.RawParams) *gqlerror.Error {
	raw, ok := p.Extensions["persistedQuery"].(map[string]any)
	if !ok {
		if p.Extensions["persistedQuery"] != nil {
			return gqlerror.Errorf("invalid APQ extension data")
		}
		return nil
	}
	hash, ok := raw["sha256Hash"].(string)
	if !ok {
		return gqlerror.Errorf("invalid APQ extension data")
	}
	if version(raw["version"]) != 1 {
		return gqlerror.Errorf("unsupported APQ version")
	}
	sent := p.Query != ""
	if !sent {
		if p.Query, ok = a.Cache.Get(ctx, hash); !ok {
			err := gqlerror.Errorf("PersistedQueryNotFound")
			errcode.Set(err, CodePersistedQueryNotFound)
			return err
		}
	} else if queryHash(p.Query) != hash {
		return gqlerror.Errorf("provided APQ hash does not match query")
	}
	graphql.GetOperationContext(ctx).Stats.SetExtension(statsKey, &extension.ApqStats{Hash: hash, SentQuery: sent})
	return nil
}

// InterceptOperation runs only for an operation gqlgen accepted: that is
// when a query sent with its hash is remembered.
func (a PersistedQueries) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	opCtx := graphql.GetOperationContext(ctx)
	if s, ok := opCtx.Stats.GetExtension(statsKey).(*extension.ApqStats); ok && s.SentQuery {
		a.Cache.Add(ctx, s.Hash, opCtx.RawQuery)
	}
	return next(ctx)
}

// version reads the version as any JSON decoder may have left it.
func version(v any) int64 {
	switch v := v.(type) {
	case json.Number:
		n, _ := v.Int64()
		return n
	case float64:
		return int64(v)
	case int:
		return int64(v)
	case int64:
		return v
	}
	return 0
}

func queryHash(query string) string {
	sum := sha256.Sum256([]byte(query))
	return hex.EncodeToString(sum[:])
}
