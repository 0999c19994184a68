package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"chatql/graph"
)

// chromiumPath finds a Chromium or Chrome binary: CHROMIUM, then the
// usual names. The Makefile's test target installs Debian's chromium.
func chromiumPath() string {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserTraffic records what a page asks for over the network, and what
// the browser complains about (Content-Security-Policy violations, script
// errors).
type browserTraffic struct {
	mu        sync.Mutex
	urls      []string
	complaint []string
}

func (b *browserTraffic) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.urls = append(b.urls, ev.Request.URL)
	case *network.EventWebSocketCreated:
		b.urls = append(b.urls, ev.URL)
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError {
			b.complaint = append(b.complaint, string(ev.Entry.Source)+": "+ev.Entry.Text)
		}
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		text := d.Text
		if d.Exception != nil {
			text += " " + d.Exception.Description
		}
		b.complaint = append(b.complaint, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, text))
	}
}

func (b *browserTraffic) snapshot() (urls, complaints []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.urls...), append([]string(nil), b.complaint...)
}

// TestPlaygroundInBrowser: in headless Chromium, the playground served
// from the binary runs the Inbox query and shows its data, receives a
// messageAdded event over its websocket (Authorization from the header
// editor as connectionParams), breaks none of its Content-Security-Policy,
// and makes every request to the server's own origin.
func TestPlaygroundInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	chromium := chromiumPath()
	if chromium == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("Chromium not found: install it (apt-get install chromium; make test does) or set CHROMIUM to its path")
		}
		t.Skip("Chromium not found (apt-get install chromium, or set CHROMIUM)")
	}
	t.Parallel()
	a := newAPI(t, withRealtime)
	ann, token := a.user("Ann")
	conv := a.conversation("Browsers", []string{ann}, "hello from the inbox")

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	defer cancelAlloc()
	ctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	traffic := &browserTraffic{}
	if err := chromedp.Listen(ctx, traffic.listen); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	headers, _ := json.Marshal(map[string]string{"Authorization": "Bearer " + token})
	open := func(query string) string {
		return a.srv.URL + "/?" + url.Values{"query": {query}, "headers": {string(headers)}}.Encode()
	}
	const run = chromedp.CSS(".graphiql-execute-button")
	// shows waits until the result pane shows want.
	shows := func(want string) chromedp.Action[chromedp.Void] {
		quoted, _ := json.Marshal(want)
		return chromedp.Poll[chromedp.Void](
			`document.querySelector(".graphiql-response")?.innerText.includes(`+string(quoted)+`)`,
			chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))
	}
	failed := func(what string, err error) {
		t.Helper()
		urls, complaints := traffic.snapshot()
		t.Fatalf("%s: %v\nrequests: %q\nbrowser errors: %q", what, err, urls, complaints)
	}
	for _, enable := range []func() error{
		func() error { _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); return err },
		func() error { _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); return err },
		func() error { _, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{}); return err },
	} {
		if err := enable(); err != nil {
			failed("enable the browser's events", err)
		}
	}

	// Every page records what its Content-Security-Policy blocks (a
	// script the browser injects is not subject to the policy).
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.blocked = []; document.addEventListener("securitypolicyviolation",
			e => window.blocked.push(e.violatedDirective + " " + e.blockedURI));`,
	}); err != nil {
		failed("watch for policy violations", err)
	}
	checkBlocked := func(what string) {
		t.Helper()
		blocked, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.blocked`))
		if err != nil {
			failed("read policy violations", err)
		}
		for _, b := range blocked {
			t.Errorf("%s: the Content-Security-Policy blocked %s", what, b)
		}
	}

	// Run the Inbox query.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(open(graph.InboxQuery)),
		chromedp.WaitVisible(run),
		chromedp.Click(run),
		shows("hello from the inbox"),
	); err != nil {
		failed("Inbox in the playground", err)
	}
	checkBlocked("Inbox")
	// A dialog: its scroll lock inserts a <style> element, which is what
	// the policy's 'unsafe-inline' styles are for.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`button[aria-label="Open settings dialog"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[role="dialog"]`)),
	); err != nil {
		failed("the settings dialog", err)
	}
	checkBlocked("the settings dialog")

	// Subscribe, then send a message and see it arrive.
	subscription := `subscription { messageAdded(conversationId: "` + conv + `") { body } }`
	if err := chromedp.Do(ctx,
		chromedp.Navigate(open(subscription)),
		chromedp.WaitVisible(run),
		chromedp.Click(run),
	); err != nil {
		failed("subscribe in the playground", err)
	}
	waitFor(t, 20*time.Second, "the playground's subscription", func() bool { return a.hub.Stats().Subscribers == 1 })
	a.sendMessage(token, conv, "hello over the websocket")
	if err := chromedp.Do(ctx, shows("hello over the websocket")); err != nil {
		failed("messageAdded in the playground", err)
	}
	checkBlocked("messageAdded")

	urls, complaints := traffic.snapshot()
	origin := strings.TrimPrefix(a.srv.URL, "http://")
	var websocket bool
	for _, u := range urls {
		switch {
		case strings.HasPrefix(u, "data:"):
			// Inline, from GraphiQL's stylesheet: not a request.
		case strings.HasPrefix(u, "ws://"+origin+"/query"):
			websocket = true
		case strings.HasPrefix(u, "http://"+origin+"/"):
		default:
			t.Errorf("the page made a request to another origin: %s", u)
		}
	}
	if !websocket {
		t.Errorf("no websocket to /query among the requests: %q", urls)
	}
	for _, c := range complaints {
		t.Errorf("browser: %s", c)
	}
	t.Logf("%d requests, all to %s", len(urls), origin)
}
