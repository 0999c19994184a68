package graph

import (
	"os"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// TestInboxQueryIsValid: the example every tool shares must stay valid
// against the schema as it changes.
func TestInboxQueryIsValid(t *testing.T) {
	schema, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	s, gqlErr := gqlparser.LoadSchema(&ast.Source{Name: "schema.graphqls", Input: string(schema)})
	if gqlErr != nil {
		t.Fatal(gqlErr)
	}
	doc, errs := gqlparser.LoadQuery(s, InboxQuery)
	if len(errs) > 0 {
		t.Fatalf("InboxQuery does not validate: %v", errs)
	}
	if len(doc.Operations) != 1 || doc.Operations[0].Name != "Inbox" {
		t.Errorf("InboxQuery holds %d operations, want the one named Inbox", len(doc.Operations))
	}
}
