package web

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The POST transport answers a body it cannot decode with
// "json request body could not be decoded: <Go's error> body:<the whole
// body>": Go's error names the transport's struct and field types, and the
// body comes back whole (a 750 KB body made a 1.35 MB answer).
// cleanDecodeError rewrites that message into one that says what is wrong
// in the request's own terms and quotes at most excerptBytes of the body.
const (
	decodePrefix = "json request body could not be decoded: "
	excerptBytes = 40
)

// wantTypes are the JSON types of the request fields (GraphQL over HTTP).
var wantTypes = map[string]string{
	"query":         "a string",
	"operationName": "a string",
	"variables":     "an object",
	"extensions":    "an object",
}

// typeError matches encoding/json's *UnmarshalTypeError text for a field.
var typeError = regexp.MustCompile(`^json: cannot unmarshal (\w+) into Go (?:struct field \w+\.|value of type )(\w*)`)

func cleanDecodeError(msg string) string {
	rest, ok := strings.CutPrefix(msg, decodePrefix)
	if !ok {
		return msg
	}
	goErr, body, _ := strings.Cut(rest, " body:")
	if m := typeError.FindStringSubmatch(goErr); m != nil {
		got, field := m[1], m[2]
		if want, ok := wantTypes[field]; ok {
			return fmt.Sprintf("the request body's %q must be %s, not %s", field, want, jsonKind(got))
		}
		return fmt.Sprintf("the request body must be a JSON object with \"query\", not %s", jsonKind(got))
	}
	reason := strings.TrimPrefix(goErr, "json: ")
	if strings.Contains(reason, "Go ") {
		reason = "malformed JSON"
	}
	return fmt.Sprintf("the request body is not valid JSON (%s); it begins %s", reason, excerpt(body))
}

// jsonKind names a JSON type from encoding/json's word for it.
func jsonKind(goWord string) string {
	switch goWord {
	case "array", "object":
		return "an " + goWord
	case "number", "string":
		return "a " + goWord
	case "bool":
		return "a boolean"
	}
	return goWord
}

// maxRequestErrors is how many errors a request error lists: a document
// of thousands of unknown fields would otherwise get as many errors back.
const maxRequestErrors = 20

// quotedName is a long quoted name or value in a parser or validation
// message ("Cannot query field "zzz…" on type "Query"").
var quotedName = regexp.MustCompile(`"[^"]{` + strconv.Itoa(excerptBytes) + `,}"`)

// shortenQuoted cuts the long quoted names in msg to an excerpt, so that
// an answer never grows with the names the client chose.
func shortenQuoted(msg string) string {
	return quotedName.ReplaceAllStringFunc(msg, func(q string) string {
		inner := q[1 : len(q)-1]
		cut := excerptBytes / 2
		for cut > 0 && !utf8.RuneStart(inner[cut]) {
			cut--
		}
		return `"` + inner[:cut] + `…"`
	})
}

// excerpt quotes the start of body, at most excerptBytes of it.
func excerpt(body string) string {
	if len(body) <= excerptBytes {
		return fmt.Sprintf("%q", body)
	}
	cut := excerptBytes
	for cut > 0 && !utf8.RuneStart(body[cut]) {
		cut--
	}
	return fmt.Sprintf("%q…", body[:cut])
}
