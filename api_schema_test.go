package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"chatql/graph"
)

// schemaIntrospection asks for everything /schema.graphql prints.
const schemaIntrospection = `{ __schema {
  queryType { name } mutationType { name } subscriptionType { name }
  types { kind name description
    fields(includeDeprecated: true) { name description isDeprecated deprecationReason
      args { name description defaultValue type { ...T } } type { ...T } }
    inputFields { name description defaultValue type { ...T } }
    interfaces { name } possibleTypes { name }
    enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } }
  directives { name locations args { name type { ...T } } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }`

type introType struct {
	Kind, Name string
	OfType     *introType
}

func (t *introType) String() string {
	switch t.Kind {
	case "NON_NULL":
		return t.OfType.String() + "!"
	case "LIST":
		return "[" + t.OfType.String() + "]"
	}
	return t.Name
}

type introValue struct {
	Name, Description string
	DefaultValue      *string
	Type              *introType
}

// TestSchemaSDL: GET /schema.graphql is a valid schema that describes
// exactly what introspection reports (types, fields, arguments, defaults,
// enum values, descriptions, deprecations, root types), and is refused,
// like introspection, when introspection is off.
func TestSchemaSDL(t *testing.T) {
	t.Parallel()
	a := newAPI(t)
	resp, body := a.get("", "/schema.graphql")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/schema.graphql: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if string(body) != string(graph.SDL()) {
		t.Error("/schema.graphql differs from graph.SDL")
	}
	for _, banned := range []string{"@goField", "@goModel", "@goTag", "__Schema"} {
		if strings.Contains(string(body), banned) {
			t.Errorf("the SDL contains %s", banned)
		}
	}
	schema, gerr := gqlparser.LoadSchema(&ast.Source{Name: "schema.graphql", Input: string(body)})
	if gerr != nil {
		t.Fatalf("the SDL does not load: %v", gerr)
	}

	r := a.post("", schemaIntrospection, nil)
	if len(r.Errors) > 0 {
		t.Fatalf("introspection: %s", r.Raw)
	}
	var intro struct {
		Schema struct {
			QueryType, MutationType, SubscriptionType struct{ Name string }
			Types                                     []struct {
				Kind, Name, Description string
				Fields                  []struct {
					Name, Description string
					IsDeprecated      bool
					DeprecationReason *string
					Args              []introValue
					Type              *introType
				}
				InputFields   []introValue
				Interfaces    []struct{ Name string }
				PossibleTypes []struct{ Name string }
				EnumValues    []struct {
					Name, Description string
					IsDeprecated      bool
					DeprecationReason *string
				}
			}
			Directives []struct{ Name string }
		} `json:"__schema"`
	}
	if err := json.Unmarshal(r.Data, &intro); err != nil {
		t.Fatal(err)
	}

	// Both sides as one line per fact, compared as sets.
	var want []string
	add := func(list *[]string, format string, args ...any) { *list = append(*list, fmt.Sprintf(format, args...)) }
	is := intro.Schema
	add(&want, "schema query=%s mutation=%s subscription=%s", is.QueryType.Name, is.MutationType.Name, is.SubscriptionType.Name)
	for _, ty := range is.Types {
		if standard(ty.Name) {
			continue
		}
		add(&want, "%s %s %q", ty.Kind, ty.Name, ty.Description)
		for _, f := range ty.Fields {
			add(&want, "%s.%s: %s %q deprecated=%v %s", ty.Name, f.Name, f.Type, f.Description, f.IsDeprecated, deref(f.DeprecationReason))
			for _, arg := range f.Args {
				add(&want, "%s.%s(%s: %s = %s) %q", ty.Name, f.Name, arg.Name, arg.Type, deref(arg.DefaultValue), arg.Description)
			}
		}
		for _, f := range ty.InputFields {
			add(&want, "%s.%s: %s = %s %q", ty.Name, f.Name, f.Type, deref(f.DefaultValue), f.Description)
		}
		for _, i := range ty.Interfaces {
			add(&want, "%s implements %s", ty.Name, i.Name)
		}
		for _, p := range ty.PossibleTypes {
			add(&want, "%s includes %s", ty.Name, p.Name)
		}
		for _, v := range ty.EnumValues {
			add(&want, "%s.%s %q deprecated=%v %s", ty.Name, v.Name, v.Description, v.IsDeprecated, deref(v.DeprecationReason))
		}
	}
	for _, d := range is.Directives {
		if !builtinDirective(d.Name) {
			add(&want, "directive @%s", d.Name)
		}
	}

	var got []string
	name := func(d *ast.Definition) string {
		if d == nil {
			return ""
		}
		return d.Name
	}
	add(&got, "schema query=%s mutation=%s subscription=%s", name(schema.Query), name(schema.Mutation), name(schema.Subscription))
	for _, ty := range schema.Types {
		if standard(ty.Name) {
			continue
		}
		add(&got, "%s %s %q", ty.Kind, ty.Name, ty.Description)
		for _, f := range ty.Fields {
			if strings.HasPrefix(f.Name, "__") {
				continue
			}
			reason, deprecated := deprecation(f.Directives)
			if ty.Kind == ast.InputObject {
				add(&got, "%s.%s: %s = %s %q", ty.Name, f.Name, f.Type, literal(f.DefaultValue), f.Description)
				continue
			}
			add(&got, "%s.%s: %s %q deprecated=%v %s", ty.Name, f.Name, f.Type, f.Description, deprecated, reason)
			for _, arg := range f.Arguments {
				add(&got, "%s.%s(%s: %s = %s) %q", ty.Name, f.Name, arg.Name, arg.Type, literal(arg.DefaultValue), arg.Description)
			}
		}
		for _, i := range ty.Interfaces {
			add(&got, "%s implements %s", ty.Name, i)
		}
		if ty.Kind == ast.Union || ty.Kind == ast.Interface {
			for _, p := range schema.GetPossibleTypes(ty) {
				add(&got, "%s includes %s", ty.Name, p.Name)
			}
		}
		for _, v := range ty.EnumValues {
			reason, deprecated := deprecation(v.Directives)
			add(&got, "%s.%s %q deprecated=%v %s", ty.Name, v.Name, v.Description, deprecated, reason)
		}
	}
	for _, d := range schema.Directives {
		if !builtinDirective(d.Name) {
			add(&got, "directive @%s", d.Name)
		}
	}

	slices.Sort(want)
	slices.Sort(got)
	if len(want) < 50 {
		t.Fatalf("introspection reported only %d facts: %s", len(want), r.Raw)
	}
	for _, w := range want {
		if _, found := slices.BinarySearch(got, w); !found {
			t.Errorf("introspection has, the SDL lacks: %s", w)
		}
	}
	for _, g := range got {
		if _, found := slices.BinarySearch(want, g); !found {
			t.Errorf("the SDL has, introspection lacks: %s", g)
		}
	}

	off := a.replica(t, func(o *apiOptions) { o.introspection = false })
	resp, body = off.get("", "/schema.graphql")
	var refused gqlResponse
	if err := json.Unmarshal(body, &refused); err != nil || resp.StatusCode != http.StatusForbidden ||
		len(refused.Errors) != 1 || refused.Errors[0].Extensions.Code != graph.CodeForbidden {
		t.Errorf("introspection off: %d %s", resp.StatusCode, body)
	}
}

// standard says whether a type is one every GraphQL server has, which an
// SDL leaves out.
func standard(name string) bool {
	return strings.HasPrefix(name, "__") || slices.Contains([]string{"String", "Int", "Float", "Boolean", "ID"}, name)
}

// builtinDirective says whether a directive comes with every schema:
// the specification's and @defer, which gqlgen declares itself.
func builtinDirective(name string) bool {
	return slices.Contains([]string{"include", "skip", "deprecated", "specifiedBy", "oneOf", "defer"}, name)
}

func deprecation(dirs ast.DirectiveList) (reason string, deprecated bool) {
	d := dirs.ForName("deprecated")
	if d == nil {
		return "<nil>", false
	}
	if arg := d.Arguments.ForName("reason"); arg != nil {
		return arg.Value.Raw, true
	}
	return "No longer supported", true
}

func literal(v *ast.Value) string {
	if v == nil {
		return "<nil>"
	}
	return v.String()
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
