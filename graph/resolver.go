// Package graph owns chatql's GraphQL layer: the generated executable schema,
// the resolvers, and the wiring of per-operation state.
package graph

//go:generate go tool gqlgen generate

import "chatql/dbpool"

// Resolver holds the long-lived dependencies of the resolvers. Nothing
// request-scoped lives here: per-operation state travels in the context.
type Resolver struct {
	Pool *dbpool.Pool
}
