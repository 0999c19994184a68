package auth

import (
	"strings"
)

// FromHeader extracts the token from an Authorization header value of the
// form "Bearer <token>": the scheme is matched case-insensitively and
// surrounding spaces are trimmed.
//
// An empty (or all-space) header returns ("", false, nil): the request is
// anonymous, which is the caller's to allow or refuse. A header that is
// present but not a single Bearer token returns ("", true, err) with err
// wrapping ErrUnauthenticated: a client that sent credentials we cannot read
// should be told so, not silently treated as anonymous.
func FromHeader(header string) (string, bool, error) {
	header = strings.TrimSpace(header)
	if header == "" {
		return "", false, nil
	}
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true, unauthenticated("authorization header is not a Bearer token")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", true, unauthenticated("authorization header has an empty Bearer token")
	}
	if strings.ContainsAny(token, " \t") {
		return "", true, unauthenticated("authorization header has more than one Bearer token")
	}
	return token, true, nil
}
