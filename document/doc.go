// Package document owns what a GraphQL document may cost the server before
// it runs: the limits checked on the parsed document before gqlgen
// validates it, and the byte-bounded cache of parsed documents and
// automatic persisted queries.
//
// gqlparser's validation is quadratic in repeated fields (its
// OverlappingFieldsCanBeMerged rule compares every pair of fields with the
// same response name): 16,000 repeats of one field cost seconds of CPU
// with nothing to cancel them. Parsing is linear, so the Guard parses a
// document itself, with a token limit, and counts what it holds in one
// linear pass before gqlgen's validation ever sees it.
//
// The cache counts bytes rather than entries, so that a client sending
// many distinct large documents cannot grow the heap past a bound; and it
// holds only documents that passed the limits and validation.
package document
