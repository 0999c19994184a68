package web

import (
	"strconv"
	"strings"
)

// The media types a GraphQL response can have (the GraphQL-over-HTTP
// spec's two JSON types, and server-sent events for streams).
const (
	MediaJSON            = "application/json"
	MediaGraphQLResponse = "application/graphql-response+json"
	MediaEventStream     = "text/event-stream"
)

// mediaRange is one element of an Accept header: type/subtype (either may
// be *) with its quality.
type mediaRange struct {
	typ, subtype string
	q            float64
}

// parseAccept parses an Accept header (RFC 9110, section 12.5.1) into its
// media ranges. Parameters other than q are ignored, a malformed element
// is skipped, and a q that does not parse counts as 0.
func parseAccept(header string) []mediaRange {
	var ranges []mediaRange
	for elem := range strings.SplitSeq(header, ",") {
		parts := strings.Split(elem, ";")
		typ, subtype, ok := strings.Cut(strings.ToLower(strings.TrimSpace(parts[0])), "/")
		typ, subtype = strings.TrimSpace(typ), strings.TrimSpace(subtype)
		if !ok || typ == "" || subtype == "" || (typ == "*" && subtype != "*") {
			continue
		}
		r := mediaRange{typ: typ, subtype: subtype, q: 1}
		for _, p := range parts[1:] {
			name, value, _ := strings.Cut(p, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "q") {
				continue
			}
			q, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil || q < 0 || q > 1 {
				q = 0
			}
			r.q = q
			break // parameters after q are accept-extensions
		}
		ranges = append(ranges, r)
	}
	return ranges
}

// quality is how acceptable media (a type/subtype without wildcards) is
// under ranges: the q of the most specific range that matches it (RFC
// 9110: an exact match beats type/*, which beats */*), and that range's
// specificity (2 exact, 1 type/*, 0 */*; -1 when nothing matches, q 0).
func quality(ranges []mediaRange, media string) (q float64, specificity int) {
	typ, subtype, _ := strings.Cut(media, "/")
	specificity = -1
	for _, r := range ranges {
		s := -1
		switch {
		case r.typ == typ && r.subtype == subtype:
			s = 2
		case r.typ == typ && r.subtype == "*":
			s = 1
		case r.typ == "*":
			s = 0
		}
		if s > specificity {
			q, specificity = r.q, s
		}
	}
	return q, specificity
}

// Negotiated is what a request's Accept header asks of a GraphQL response.
type Negotiated struct {
	// JSON is the JSON type to answer with (MediaGraphQLResponse or
	// MediaJSON): the one with the higher q; at equal q the one named
	// exactly rather than through a wildcard, and between two named
	// exactly MediaGraphQLResponse, the spec's own. No Accept, or only
	// wildcards, is MediaJSON, as the spec asks for clients that predate
	// MediaGraphQLResponse. When neither is acceptable it is MediaJSON
	// too: the spec lets a server answer with it rather than 406.
	JSON string
	// jsonQ is JSON's quality.
	jsonQ float64
	// streamQ is the quality of text/event-stream named exactly: a
	// wildcard does not ask for a stream.
	streamQ float64
}

// Negotiate reads an Accept header.
func Negotiate(accept string) Negotiated {
	ranges := parseAccept(accept)
	if len(ranges) == 0 {
		return Negotiated{JSON: MediaJSON, jsonQ: 1}
	}
	gq, gs := quality(ranges, MediaGraphQLResponse)
	jq, js := quality(ranges, MediaJSON)
	n := Negotiated{JSON: MediaJSON, jsonQ: jq}
	if gq > jq || (gq == jq && gq > 0 && gs > js) || (gq == jq && gq > 0 && gs == 2 && js == 2) {
		n.JSON, n.jsonQ = MediaGraphQLResponse, gq
	}
	if sq, ss := quality(ranges, MediaEventStream); ss == 2 {
		n.streamQ = sq
	}
	return n
}

// StreamAcceptable reports whether text/event-stream is acceptable at all
// (named with q > 0): enough for a subscription, which has no other HTTP
// answer.
func (n Negotiated) StreamAcceptable() bool { return n.streamQ > 0 }

// StreamPreferred reports whether text/event-stream is strictly preferred
// to both JSON types: what a query or mutation needs to be streamed, so
// that a client listing every type it can read (urql lists JSON first,
// then text/event-stream) gets plain JSON.
func (n Negotiated) StreamPreferred() bool { return n.streamQ > n.jsonQ }
