package document

import "github.com/vektah/gqlparser/v2/ast"

// Counts is what a document holds, as written: fragment definitions are
// counted once each however often they are spread, so that counting stays
// linear in the document's size.
type Counts struct {
	// Fields is every field occurrence, aliases included: `{ a: id b: id }`
	// is two fields.
	Fields int
	// Fragments is every fragment spread and inline fragment.
	Fragments int
	// Depth is the deepest nesting of selection sets, through fragment
	// spreads: `{ a { b } }` is 2. A spread adds the depth of the fragment
	// it names; a fragment's depth is computed once.
	Depth int
	// Nodes is every node of the syntax tree the parser allocated
	// (selections, arguments, values, directives, variable definitions):
	// what a parsed document weighs in memory besides its text.
	Nodes int
}

// Selections is what the field limit bounds: fields and fragments (spreads
// and inline fragments) as written. A spread is not free: side by side,
// thousands of them are as slow to validate as thousands of fields.
func (c Counts) Selections() int { return c.Fields + c.Fragments }

// Count walks doc once. Fragment cycles (which validation refuses) and
// spreads of unknown fragments add no depth.
func Count(doc *ast.QueryDocument) Counts {
	w := walker{
		fragments: make(map[string]*ast.FragmentDefinition, len(doc.Fragments)),
		depth:     make(map[string]int, len(doc.Fragments)),
	}
	for _, f := range doc.Fragments {
		if _, dup := w.fragments[f.Name]; !dup {
			w.fragments[f.Name] = f
		}
	}
	for _, op := range doc.Operations {
		w.c.Nodes++
		w.variables(op.VariableDefinitions)
		w.directives(op.Directives)
		w.c.Depth = max(w.c.Depth, w.selections(op.SelectionSet, true))
	}
	// Every fragment definition is counted once, spread or not (an unused
	// one still costs parsing and validation).
	for _, f := range doc.Fragments {
		w.c.Nodes++
		w.variables(f.VariableDefinition)
		w.directives(f.Directives)
		w.selections(f.SelectionSet, true)
	}
	// Fragment depths were computed through spreads without counting.
	return w.c
}

type walker struct {
	c         Counts
	fragments map[string]*ast.FragmentDefinition
	// depth memoises each fragment's depth; -1 marks one being computed
	// (a cycle).
	depth map[string]int
}

// selections returns the depth of set (1 for a non-empty set of leaves, 0
// for an empty one). With count it also counts what set holds; without,
// it only measures depth (for a fragment's depth, whose definition is
// counted on its own).
func (w *walker) selections(set ast.SelectionSet, count bool) int {
	if len(set) == 0 {
		return 0
	}
	deepest := 0
	for _, s := range set {
		d := 0
		switch s := s.(type) {
		case *ast.Field:
			if count {
				w.c.Fields++
				w.c.Nodes++
				w.arguments(s.Arguments)
				w.directives(s.Directives)
			}
			d = w.selections(s.SelectionSet, count)
		case *ast.InlineFragment:
			if count {
				w.c.Fragments++
				w.c.Nodes++
				w.directives(s.Directives)
			}
			// An inline fragment is no level of its own in the result.
			d = w.selections(s.SelectionSet, count) - 1
		case *ast.FragmentSpread:
			if count {
				w.c.Fragments++
				w.c.Nodes++
				w.directives(s.Directives)
			}
			d = w.fragmentDepth(s.Name) - 1
		}
		deepest = max(deepest, d)
	}
	return 1 + deepest
}

// fragmentDepth is the depth of the named fragment's selection set,
// computed once per fragment.
func (w *walker) fragmentDepth(name string) int {
	if d, ok := w.depth[name]; ok {
		return max(d, 0)
	}
	f, ok := w.fragments[name]
	if !ok {
		return 0
	}
	w.depth[name] = -1
	d := w.selections(f.SelectionSet, false)
	w.depth[name] = d
	return d
}

func (w *walker) arguments(args ast.ArgumentList) {
	for _, a := range args {
		w.c.Nodes++
		w.value(a.Value)
	}
}

func (w *walker) directives(dirs ast.DirectiveList) {
	for _, d := range dirs {
		w.c.Nodes++
		w.arguments(d.Arguments)
	}
}

func (w *walker) variables(vars ast.VariableDefinitionList) {
	for _, v := range vars {
		w.c.Nodes++
		w.value(v.DefaultValue)
		w.directives(v.Directives)
	}
}

// value counts a value and its children iteratively: a deeply nested list
// literal must not grow the goroutine stack with it.
func (w *walker) value(v *ast.Value) {
	stack := []*ast.Value{v}
	for len(stack) > 0 {
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if v == nil {
			continue
		}
		w.c.Nodes++
		for _, c := range v.Children {
			stack = append(stack, c.Value)
		}
	}
}
