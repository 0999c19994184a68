package realtime

import (
	"fmt"
	"testing"
	"time"
)

// These tests drive the fan-out directly; the listening connection is
// covered end to end by the server's TestRealtime tests.

func newTestHub(t *testing.T) *Hub {
	t.Helper()
	h, err := New(Options{URL: "postgres://localhost/none"})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// event announces message i of conv, at seq i.
func event(i int, conv string) Event {
	return Event{ID: fmt.Sprintf("m%d", i), ConversationID: conv, Seq: int64(i), CreatedAt: time.Unix(int64(i), 0)}
}

// TestSlowSubscriberDropped: a full buffer drops that subscriber (its
// channel closed, Dropped true) without holding up the others.
func TestSlowSubscriberDropped(t *testing.T) {
	h := newTestHub(t)
	slow := h.Subscribe("c")
	fast := h.Subscribe("c")
	defer fast.Close()
	for i := range BufferSize + 1 {
		h.deliver(event(i+1, "c"))
		<-fast.C // keeps up
	}
	select {
	case <-slow.Done():
	default:
		t.Fatal("Done not closed by the drop")
	}
	n := 0
	for range slow.C {
		n++
	}
	if n != BufferSize || !slow.Dropped() {
		t.Fatalf("slow got %d events, dropped %v; want %d, true", n, slow.Dropped(), BufferSize)
	}
	if fast.Dropped() || h.Subscribers() != 1 {
		t.Fatalf("fast dropped %v, %d subscribers", fast.Dropped(), h.Subscribers())
	}
	if st := h.Stats(); st.Dropped != 1 || st.Notifications != BufferSize+1 || st.Subscribers != 1 {
		t.Fatalf("stats %+v, want 1 dropped, %d notifications, 1 subscriber", st, BufferSize+1)
	}
	slow.Close() // idempotent after a drop
}

// TestDeliverOnce: an event is delivered once (a catch-up and a late
// notification of the same message), only to its conversation, and one
// older than the conversation's latest is not delivered at all.
func TestDeliverOnce(t *testing.T) {
	h := newTestHub(t)
	s := h.Subscribe("c")
	other := h.Subscribe("d")
	h.deliver(event(1, "c"))
	h.deliver(event(1, "c"))
	h.deliver(event(3, "c"))
	h.deliver(event(2, "c"))
	h.deliver(event(4, "c"))
	s.Close()
	other.Close()
	var got []string
	for e := range s.C {
		got = append(got, e.ID)
	}
	if fmt.Sprint(got) != "[m1 m3 m4]" {
		t.Fatalf("got %v, want [m1 m3 m4]", got)
	}
	if _, ok := <-other.C; ok {
		t.Fatal("another conversation's subscriber got an event")
	}
}

// TestSubscribeAnnounced: a subscription learns how far its conversation
// had been announced when it began, also when it had no subscriber then;
// an event without a seq (from a sender that gives none) always passes.
func TestSubscribeAnnounced(t *testing.T) {
	h := newTestHub(t)
	if s := h.Subscribe("c"); s.Announced != 0 {
		t.Fatalf("nothing announced yet, Announced %d", s.Announced)
	}
	h.deliver(event(5, "c"))
	h.deliver(event(7, "d"))
	s := h.Subscribe("c")
	defer s.Close()
	if s.Announced != 5 {
		t.Fatalf("Announced %d, want 5", s.Announced)
	}
	h.deliver(Event{ID: "x", ConversationID: "c"})
	h.deliver(Event{ID: "x", ConversationID: "c"})
	if n := len(s.C); n != 2 {
		t.Fatalf("%d events without a seq delivered, want 2", n)
	}
}

// TestStoppedHub: stopping closes every subscription, and later ones at once.
func TestStoppedHub(t *testing.T) {
	h := newTestHub(t)
	s := h.Subscribe("c")
	h.stop()
	if _, ok := <-s.C; ok {
		t.Fatal("subscription open after stop")
	}
	if _, ok := <-h.Subscribe("c").C; ok {
		t.Fatal("subscription to a stopped hub open")
	}
	if s.Dropped() {
		t.Fatal("stopped, not dropped")
	}
}
