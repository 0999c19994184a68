package web

import (
	"strings"
	"testing"
)

func TestCleanDecodeError(t *testing.T) {
	long := `{"query":` + strings.Repeat("x", 5000)
	for _, tc := range []struct {
		name, in, want string
	}{
		{"query not a string",
			decodePrefix + `json: cannot unmarshal number into Go struct field RawParams.query of type string body:{"query": 1}`,
			`the request body's "query" must be a string, not a number`},
		{"variables not an object",
			decodePrefix + `json: cannot unmarshal array into Go struct field RawParams.variables of type map[string]interface {} body:{"variables":[]}`,
			`the request body's "variables" must be an object, not an array`},
		{"body not an object",
			decodePrefix + `json: cannot unmarshal array into Go value of type transport.RawParams body:[]`,
			`the request body must be a JSON object with "query", not an array`},
		{"syntax error quotes a short excerpt",
			decodePrefix + `invalid character 'x' looking for beginning of value body:` + long,
			`the request body is not valid JSON (invalid character 'x' looking for beginning of value); it begins "{\"query\":xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"…`},
		{"other messages untouched", "no operation provided", "no operation provided"},
	} {
		got := cleanDecodeError(tc.in)
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
		if strings.Contains(got, "Go ") || strings.Contains(got, "RawParams") || len(got) > 200 {
			t.Errorf("%s: leaks or too long: %s", tc.name, got)
		}
	}
}

// FuzzCleanDecodeError: whatever the body, the message is short and names
// no Go type.
func FuzzCleanDecodeError(f *testing.F) {
	f.Add("json: cannot unmarshal number into Go struct field RawParams.query of type string", `{"query": 1}`)
	f.Add("invalid character 'x' looking for beginning of value", "xxxx")
	f.Add("unexpected EOF", "{\"query\":\"\xff\xfe")
	f.Fuzz(func(t *testing.T, goErr, body string) {
		got := cleanDecodeError(decodePrefix + goErr + " body:" + body)
		if strings.Contains(got, "Go struct") || strings.Contains(got, "Go value") {
			t.Errorf("names a Go type: %s", got)
		}
		// An excerpt of excerptBytes quotes to at most 4 bytes each (\xff).
		if len(got) > len(goErr)+4*excerptBytes+100 {
			t.Errorf("%d bytes for a %d-byte body", len(got), len(body))
		}
	})
}

func TestShortenQuoted(t *testing.T) {
	long := strings.Repeat("z", 300)
	got := shortenQuoted(`Cannot query field "` + long + `" on type "Query".`)
	want := `Cannot query field "` + strings.Repeat("z", excerptBytes/2) + `…" on type "Query".`
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	if s := `Expected Name, found "short"`; shortenQuoted(s) != s {
		t.Errorf("a short quote was changed: %s", shortenQuoted(s))
	}
}
