// Package load measures chatql under load: it seeds a realistic data set,
// drives a running server over HTTP with many concurrent clients, samples
// the server's connections in pg_stat_activity meanwhile, and runs the
// same SQL directly as a ceiling to compare against.
package load
