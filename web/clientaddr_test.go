package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func mustTrust(t *testing.T, s string) TrustedProxies {
	t.Helper()
	p, err := ParseTrustedProxies(s)
	if err != nil {
		t.Fatalf("ParseTrustedProxies(%q): %v", s, err)
	}
	return p
}

// TestParseTrustedProxies: CIDRs and single addresses, spaces and empty
// entries allowed; anything else is an error naming the entry.
func TestParseTrustedProxies(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{" , ", ""},
		{"127.0.0.1", "127.0.0.1/32"},
		{"10.1.2.3/8, ::1 ,fd00::/8", "10.0.0.0/8,::1/128,fd00::/8"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
	} {
		got := mustTrust(t, tc.in)
		if got.String() != tc.want {
			t.Errorf("ParseTrustedProxies(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got.Empty() != (tc.want == "") {
			t.Errorf("ParseTrustedProxies(%q).Empty() = %v", tc.in, got.Empty())
		}
	}
	for _, bad := range []string{"localhost", "10.0.0.0/33", "1.2.3", "fe80::1%eth0", "10.0.0.1,nope"} {
		if _, err := ParseTrustedProxies(bad); err == nil {
			t.Errorf("ParseTrustedProxies(%q): no error", bad)
		}
	}
}

// TestClientAddr: forwarding headers count only from a trusted peer, and
// then the right-most address that is not a trusted proxy is the client,
// whatever the client wrote to the left of it.
func TestClientAddr(t *testing.T) {
	trusted := mustTrust(t, "127.0.0.1/32, 10.0.0.0/8, fd00::/8")
	for _, tc := range []struct {
		name, remote string
		trusted      TrustedProxies
		headers      map[string][]string
		want         string // "" for the zero Addr
	}{
		{"direct peer", "203.0.113.7:5555", trusted, nil, "203.0.113.7"},
		{"untrusted peer's header ignored", "203.0.113.7:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "203.0.113.7"},
		{"nothing trusted", "127.0.0.1:5555", TrustedProxies{},
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "127.0.0.1"},
		{"one proxy", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "198.51.100.1"},
		{"forged left part ignored", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"1.1.1.1, 2.2.2.2, 198.51.100.1, 10.0.0.5"}}, "198.51.100.1"},
		{"repeated header lines", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"1.1.1.1", "198.51.100.1, 10.0.0.5"}}, "198.51.100.1"},
		{"all hops trusted", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"10.0.0.9, 10.0.0.5"}}, "10.0.0.9"},
		{"garbage stops at the last known hop", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"198.51.100.1, nonsense, 10.0.0.5"}}, "10.0.0.5"},
		{"no header", "127.0.0.1:5555", trusted, nil, "127.0.0.1"},
		{"ports and brackets", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"[2001:db8::1]:443"}}, "2001:db8::1"},
		{"IPv4 with port", "127.0.0.1:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"198.51.100.1:1234"}}, "198.51.100.1"},
		{"mapped IPv4", "[::ffff:127.0.0.1]:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"::ffff:198.51.100.1"}}, "198.51.100.1"},
		{"Forwarded", "127.0.0.1:5555", trusted,
			map[string][]string{"Forwarded": {`for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.5;by=10.0.0.1`}}, "2001:db8:cafe::17"},
		{"Forwarded without for", "127.0.0.1:5555", trusted,
			map[string][]string{"Forwarded": {`for=198.51.100.1, proto=https`}}, "127.0.0.1"},
		{"X-Forwarded-For wins over Forwarded", "127.0.0.1:5555", trusted,
			map[string][]string{"Forwarded": {"for=1.1.1.1"}, "X-Forwarded-For": {"198.51.100.1"}}, "198.51.100.1"},
		{"IPv6 peer trusted", "[fd00::1]:5555", trusted,
			map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, "198.51.100.1"},
		{"unparsable peer", "@", trusted, nil, ""},
	} {
		h := http.Header{}
		for k, vs := range tc.headers {
			for _, v := range vs {
				h.Add(k, v)
			}
		}
		got := clientAddr(tc.remote, h, tc.trusted)
		var want netip.Addr
		if tc.want != "" {
			want = netip.MustParseAddr(tc.want)
		}
		if got != want {
			t.Errorf("%s: clientAddr = %v, want %v", tc.name, got, want)
		}
	}
}

// TestAddrKey: IPv4 as it is, IPv6 by /64.
func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.1":         "198.51.100.1",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"::1":                  "::/64",
	} {
		if got := AddrKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("AddrKey(%s) = %q, want %q", in, got, want)
		}
	}
	if got := AddrKey(netip.Addr{}); got != "unknown" {
		t.Errorf("AddrKey(zero) = %q", got)
	}
	if got := ClientKey(context.Background()); got != "unknown" {
		t.Errorf("ClientKey outside Wrap = %q", got)
	}
}

// TestWrapSetsClientAddr: every request through Wrap, websocket upgrades
// included, carries its client's address.
func TestWrapSetsClientAddr(t *testing.T) {
	var got []netip.Addr
	h := Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, ClientAddr(r.Context()))
	}), Options{TrustedProxies: mustTrust(t, "192.0.2.1"), Streams: NewStreams()})
	for _, upgrade := range []bool{false, true} {
		r := httptest.NewRequest(http.MethodGet, "http://chatql.test/query", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		r.Header.Set("X-Forwarded-For", "198.51.100.7")
		if upgrade {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		}
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	want := netip.MustParseAddr("198.51.100.7")
	if len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("ClientAddr in the handler = %v, want %v twice", got, want)
	}
}
