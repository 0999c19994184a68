package playground

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestVendoredAssets: every vendored file has the hash assets/PINS gives
// it, and every file in assets/ is either pinned or chatql's own, so that
// a changed or added third-party file cannot slip in unnoticed.
func TestVendoredAssets(t *testing.T) {
	pins, err := assets.ReadFile("assets/PINS")
	if err != nil {
		t.Fatal(err)
	}
	pinned := map[string]bool{"PINS": true, "playground.js": true, "playground.css": true}
	sc := bufio.NewScanner(strings.NewReader(string(pins)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			t.Errorf("PINS: malformed line %q", line)
			continue
		}
		name, want := fields[0], fields[1]
		pinned[name] = true
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Errorf("%s: sha256 %s, PINS says %s (%s)", name, got, want, fields[2])
		}
	}
	entries, err := fs.ReadDir(assets, "assets")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !pinned[e.Name()] {
			t.Errorf("assets/%s is neither pinned in PINS nor chatql's own", e.Name())
		}
	}
}

// TestPage: the page carries its policy and its configuration, loads
// nothing from elsewhere, and its assets are served with a type.
func TestPage(t *testing.T) {
	mux := http.NewServeMux()
	err := Register(mux, Options{Endpoint: "/query", Query: "{ me { id } }", Headers: map[string]string{"Authorization": "Bearer x</script>"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/?query=%7B%7D")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := new(strings.Builder)
	if _, err := bufio.NewReader(resp.Body).WriteTo(body); err != nil {
		t.Fatal(err)
	}
	page := body.String()
	if got := resp.Header.Get("Content-Security-Policy"); got != ContentSecurityPolicy {
		t.Errorf("CSP %q", got)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page names another origin:\n%s", page)
	}
	if strings.Contains(page, "Bearer x</script>") || !strings.Contains(page, `"endpoint":"/query"`) {
		t.Errorf("configuration not escaped into the page:\n%s", page)
	}
	for _, name := range []string{"graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js", "playground.js", "playground.css"} {
		if !strings.Contains(page, AssetsPath+name) {
			t.Errorf("the page does not load %s", name)
		}
		resp, err := http.Get(srv.URL + AssetsPath + name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") == "" {
			t.Errorf("%s: %d %q", name, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	resp, err = http.Get(srv.URL + AssetsPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("%s lists the directory: %d", AssetsPath, resp.StatusCode)
	}
}
