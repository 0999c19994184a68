package document

import (
	"container/list"
	"context"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// DefaultCacheBytes is the default budget of a Cache.
const DefaultCacheBytes = 4 << 20

// Sizes used to weigh entries. A parsed document weighs its text (the
// parser keeps names and values as substrings of it, and the cache keys
// on it), plus an eighth for the allocator's rounding, plus nodeBytes per
// syntax-tree node: a field with its position and slices takes about 200
// bytes on 64-bit Go whatever its name's length, so a dense document
// weighs far more than its text (TestWeight checks the estimate against
// the heap). entryBytes covers the list element, the map entry and the
// key header.
const (
	nodeBytes  = 250
	entryBytes = 200
)

// Cache is a least-recently-used cache bounded in bytes, shared by the
// parsed-document cache (Documents) and the persisted queries (Queries):
// both are what a client can make the server keep, so they share one
// budget. Entries weigh what they keep alive, as estimated by weigh; an
// entry heavier than the whole budget is not kept. Safe for concurrent
// use.
type Cache struct {
	mu    sync.Mutex
	max   int
	bytes int
	order *list.List // front: most recently used
	items map[cacheKey]*list.Element
}

type kind uint8

const (
	kindDocument kind = iota
	kindQuery
)

type cacheKey struct {
	kind kind
	key  string
}

type cacheEntry struct {
	key    cacheKey
	value  any
	weight int
}

// NewCache returns a cache of at most maxBytes (DefaultCacheBytes if 0 or
// less).
func NewCache(maxBytes int) *Cache {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	return &Cache{max: maxBytes, order: list.New(), items: map[cacheKey]*list.Element{}}
}

// Bytes is the weight of what the cache holds now; never more than
// MaxBytes.
func (c *Cache) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// MaxBytes is the cache's budget.
func (c *Cache) MaxBytes() int { return c.max }

// Len is the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

func (c *Cache) get(k cacheKey) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).value, true
}

func (c *Cache) add(k cacheKey, value any, weight int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.remove(e)
	}
	if weight > c.max {
		return
	}
	for c.bytes+weight > c.max {
		c.remove(c.order.Back())
	}
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, value: value, weight: weight})
	c.bytes += weight
}

func (c *Cache) remove(e *list.Element) {
	entry := c.order.Remove(e).(*cacheEntry)
	delete(c.items, entry.key)
	c.bytes -= entry.weight
}

// Documents is the cache of parsed, validated documents keyed by their
// text, for handler.Server.SetQueryCache.
func (c *Cache) Documents() graphql.Cache[*ast.QueryDocument] { return documents{c} }

// Queries is the cache of persisted query texts keyed by their hash.
func (c *Cache) Queries() graphql.Cache[string] { return queries{c} }

type documents struct{ c *Cache }

func (d documents) Get(_ context.Context, query string) (*ast.QueryDocument, bool) {
	v, ok := d.c.get(cacheKey{kindDocument, query})
	if !ok {
		return nil, false
	}
	return v.(*ast.QueryDocument), true
}

func (d documents) Add(_ context.Context, query string, doc *ast.QueryDocument) {
	d.c.add(cacheKey{kindDocument, query}, doc, Weight(query, doc))
}

// Weight estimates the bytes a parsed document keeps alive: its text, its
// syntax tree and a cache entry. Counting is linear in the document.
func Weight(query string, doc *ast.QueryDocument) int {
	return entryBytes + textBytes(query) + nodeBytes*Count(doc).Nodes
}

type queries struct{ c *Cache }

func (q queries) Get(_ context.Context, hash string) (string, bool) {
	v, ok := q.c.get(cacheKey{kindQuery, hash})
	if !ok {
		return "", false
	}
	return v.(string), true
}

func (q queries) Add(_ context.Context, hash, query string) {
	q.c.add(cacheKey{kindQuery, hash}, query, entryBytes+len(hash)+textBytes(query))
}

// textBytes is what a string of s's length occupies: large allocations
// are rounded up to whole pages, small ones to size classes (both within
// an eighth).
func textBytes(s string) int { return len(s) + len(s)/8 }
