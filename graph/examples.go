package graph

import _ "embed"

// InboxQuery is what a chat client's inbox screen asks for: the page of
// conversations with their participants, last message and latest messages.
// The playground opens on it; the tests, benchmarks and load tool measure
// it. It lives in inbox.graphql so that editors and other tools read it as
// GraphQL.
//
//go:embed inbox.graphql
var InboxQuery string
