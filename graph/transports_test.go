package graph

import "testing"

func TestIsSubscription(t *testing.T) {
	for _, tc := range []struct {
		query, name string
		want        bool
	}{
		{"subscription { poolStatus { size } }", "", true},
		{"subscription S($c: ID!) { messageAdded(conversationID: $c) { id } }", "", true},
		{"{ me { id } }", "", false},
		{"query { me { id } }", "", false},
		{"mutation M { signIn }", "", false},
		{"# subscription\n{ me { id } }", "", false},
		{"fragment F on Query { me { id } } subscription { poolStatus { size } }", "", true},
		{"query Q { me { id } } subscription S { poolStatus { size } }", "S", true},
		{"query Q { me { id } } subscription S { poolStatus { size } }", "Q", false},
		{"{ a } subscription S { b }", "S", true},
		{"query Q($x: In = {a: {b: 1}}) { a } subscription S { b }", "S", true},
		{`query Q { a(s: "subscription") } subscription S { b }`, "S", true},
		{"subscription @d { b }", "", true},
		{"fragment query on Query { a } subscription { b }", "", true},
		{"subscription", "", true},
		{"", "", false},
		{"\"unterminated", "", false},
	} {
		if got := isSubscription(tc.query, tc.name); got != tc.want {
			t.Errorf("isSubscription(%q, %q) = %v, want %v", tc.query, tc.name, got, tc.want)
		}
	}
}
