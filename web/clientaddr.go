package web

// Who is asking, by network address: the direct peer, or behind trusted
// proxies the address they say they received the request from. Limits per
// client (sign-in attempts, sign-ups) key on ClientKey.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies are the proxies whose forwarding headers are believed:
// only a request whose direct peer is one of them has its client address
// taken from X-Forwarded-For or Forwarded. The zero value trusts none.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies reads a comma-separated list of CIDRs (10.0.0.0/8,
// fd00::/8) and single addresses (127.0.0.1, ::1). Empty trusts none.
func ParseTrustedProxies(s string) (TrustedProxies, error) {
	var t TrustedProxies
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.Contains(part, "/") {
			p, err := netip.ParsePrefix(part)
			if err != nil {
				return TrustedProxies{}, fmt.Errorf("trusted proxy %q: not a CIDR such as 10.0.0.0/8", part)
			}
			t.prefixes = append(t.prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil || a.Zone() != "" {
			return TrustedProxies{}, fmt.Errorf("trusted proxy %q: not an IP address or a CIDR", part)
		}
		a = a.Unmap()
		t.prefixes = append(t.prefixes, netip.PrefixFrom(a, a.BitLen()))
	}
	return t, nil
}

// Contains reports whether addr is a trusted proxy.
func (t TrustedProxies) Contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range t.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Empty reports whether no proxy is trusted.
func (t TrustedProxies) Empty() bool { return len(t.prefixes) == 0 }

// String lists the trusted prefixes, comma-separated.
func (t TrustedProxies) String() string {
	parts := make([]string, len(t.prefixes))
	for i, p := range t.prefixes {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

type clientAddrKey struct{}

// WithClientAddr returns ctx carrying addr as the client's address. Wrap
// sets it for every request; tests of other packages may set it directly.
func WithClientAddr(ctx context.Context, addr netip.Addr) context.Context {
	return context.WithValue(ctx, clientAddrKey{}, addr)
}

// ClientAddr is the address of the client of ctx's request (a websocket's
// operations inherit it from the upgrade request), or the zero Addr when
// it is unknown: outside Wrap, or a peer that is not an IP address.
func ClientAddr(ctx context.Context) netip.Addr {
	a, _ := ctx.Value(clientAddrKey{}).(netip.Addr)
	return a
}

// ClientKey is ClientAddr(ctx) as a key for per-client limits: see AddrKey.
func ClientKey(ctx context.Context) string { return AddrKey(ClientAddr(ctx)) }

// AddrKey is addr as a key for per-client limits: an IPv4 address as it is,
// an IPv6 address as its /64, the smallest block one subscriber is normally
// given (a client choosing among its 2^64 addresses is still one client),
// and "unknown" for the zero Addr.
func AddrKey(addr netip.Addr) string {
	switch {
	case !addr.IsValid():
		return "unknown"
	case addr.Is4():
		return addr.String()
	}
	p, _ := addr.Prefix(64)
	return p.String()
}

// withClientAddr puts the client's address in every request's context.
func withClientAddr(trusted TrustedProxies, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r.RemoteAddr, r.Header, trusted)
		next.ServeHTTP(w, r.WithContext(WithClientAddr(r.Context(), addr)))
	})
}

// clientAddr is the direct peer's address (remote, host:port) unless that
// peer is a trusted proxy: then the forwarding header is read from the
// right, where the nearest proxy appended, and the first address that is
// not a trusted proxy is the client. Everything left of it was written by
// the client or its own proxies and may be forged. When every hop is
// trusted, the left-most is the client; an entry that is not an address
// (a forged or obfuscated one, "unknown") stops the walk at the last hop
// known. X-Forwarded-For is read when present, else Forwarded (RFC 7239).
func clientAddr(remote string, h http.Header, trusted TrustedProxies) netip.Addr {
	peer := parseHop(remote)
	if !peer.IsValid() || !trusted.Contains(peer) {
		return peer
	}
	hops := forwardedFor(h)
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseHop(hops[i])
		if !a.IsValid() {
			return client
		}
		client = a
		if !trusted.Contains(a) {
			return a
		}
	}
	return client
}

// forwardedFor lists the hops of X-Forwarded-For, or else of Forwarded's
// for= parameters, left to right, across repeated header lines.
func forwardedFor(h http.Header) []string {
	var hops []string
	if xff := h.Values("X-Forwarded-For"); len(xff) > 0 {
		for _, line := range xff {
			hops = append(hops, strings.Split(line, ",")...)
		}
		return hops
	}
	for _, line := range h.Values("Forwarded") {
		for _, element := range strings.Split(line, ",") {
			hop := "" // an element without for= is a hop we cannot place
			for _, pair := range strings.Split(element, ";") {
				name, value, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if strings.EqualFold(name, "for") {
					hop = value
				}
			}
			hops = append(hops, hop)
		}
	}
	return hops
}

// parseHop reads an address as the headers and RemoteAddr write it: bare,
// with a port, IPv6 in brackets, quoted; IPv4-mapped IPv6 becomes IPv4 and
// a zone is dropped. Anything else is the zero Addr.
func parseHop(s string) netip.Addr {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}
