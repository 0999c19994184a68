package graph

import (
	"fmt"
	"testing"

	"chatql/chat"
)

// run makes the announced messages from seq first to last of conv.
func run(conv string, first, last int64) []announced {
	var out []announced
	for seq := first; seq <= last; seq++ {
		out = append(out, announced{msg: chat.Message{ID: fmt.Sprintf("%s%d", conv, seq), ConversationID: conv, Seq: seq}})
	}
	return out
}

// seqs lists the seqs of ans, "" for none.
func seqs(ans []announced) string {
	if len(ans) == 0 {
		return ""
	}
	return fmt.Sprintf("%d..%d (%d)", ans[0].msg.Seq, ans[len(ans)-1].msg.Seq, len(ans))
}

// TestAnnouncementsRemember: loaded runs are joined when they continue
// one another and replace one another otherwise, a subscriber finds at
// most announcedBatch of what follows its place when it is there, a run
// keeps at most runMessages and all of them at most recentMessages.
func TestAnnouncementsRemember(t *testing.T) {
	a := newAnnouncements(nil)
	check := func(conv string, after int64, want string) {
		t.Helper()
		if got := seqs(a.cached(conv, after)); got != want {
			t.Errorf("after %d in %s: %q, want %q", after, conv, got, want)
		}
	}
	a.remember("c", run("c", 1, 10))
	check("c", 0, "1..10 (10)")
	check("c", 4, "5..10 (6)")
	check("c", 10, "") // nothing after the end yet
	check("d", 0, "")

	a.remember("c", run("c", 8, 15)) // overlaps: continues from 11
	check("c", 0, "1..15 (15)")
	a.remember("c", run("c", 16, 16+announcedBatch))
	check("c", 0, "1..100 (100)")   // capped at a batch
	check("c", 15, "16..115 (100)") // the run goes on past a batch
	check("c", 16, "17..116 (100)")
	a.remember("c", run("c", 117, 116+runMessages))
	check("c", 0, "") // trimmed to the newest runMessages
	check("c", 116, "117..216 (100)")
	a.remember("c", run("c", 2000, 2001)) // a gap: replaces
	check("c", 1999, "2000..2001 (2)")
	check("c", 116, "")

	n := recentMessages/announcedBatch + 1
	for i := range n {
		conv := fmt.Sprintf("e%d", i)
		a.remember(conv, run(conv, 1, announcedBatch))
	}
	check("c", 1999, "") // the least recently loaded went first
	check(fmt.Sprintf("e%d", n-1), 0, "1..100 (100)")
	if a.size > recentMessages {
		t.Errorf("%d messages kept, more than %d", a.size, recentMessages)
	}
}
