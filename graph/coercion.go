package graph

import (
	"context"
	"math"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// strictVariables applies the GraphQL spec's input coercion to variables
// where gqlparser is lenient: it accepts a string of digits for an Int or
// a Float ("10" for first), and gqlgen's Int is 64 bits where the spec's
// is 32. A variable that the spec does not coerce is a request error,
// like any other variable gqlparser refuses.
type strictVariables struct {
	schema *ast.Schema
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = (*strictVariables)(nil)

func (*strictVariables) ExtensionName() string { return "StrictVariables" }

func (s *strictVariables) Validate(es graphql.ExecutableSchema) error {
	s.schema = es.Schema()
	return nil
}

func (s *strictVariables) MutateOperationContext(_ context.Context, opCtx *graphql.OperationContext) *gqlerror.Error {
	if opCtx.Operation == nil {
		return nil
	}
	for _, def := range opCtx.Operation.VariableDefinitions {
		path := ast.Path{ast.PathName("variable"), ast.PathName(def.Variable)}
		if err := s.check(opCtx.Variables[def.Variable], def.Type, path); err != nil {
			errcode.Set(err, errcode.ValidationFailed)
			return err
		}
	}
	return nil
}

// check walks value as gqlparser left it (lists as []any, input objects
// as map[string]any, numbers as int64 or float64) against typ.
func (s *strictVariables) check(value any, typ *ast.Type, path ast.Path) *gqlerror.Error {
	if value == nil {
		return nil // nullability is gqlparser's
	}
	if typ.Elem != nil {
		items, ok := value.([]any)
		if !ok {
			return s.check(value, typ.Elem, path) // a single value is a list of one
		}
		for i, item := range items {
			if err := s.check(item, typ.Elem, append(path, ast.PathIndex(i))); err != nil {
				return err
			}
		}
		return nil
	}
	def := s.schema.Types[typ.NamedType]
	if def == nil {
		return nil
	}
	switch def.Kind {
	case ast.Scalar:
		return checkScalar(value, typ.NamedType, path)
	case ast.InputObject:
		fields, ok := value.(map[string]any)
		if !ok {
			return nil
		}
		for _, f := range def.Fields {
			if err := s.check(fields[f.Name], f.Type, append(path, ast.PathName(f.Name))); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkScalar(value any, scalar string, path ast.Path) *gqlerror.Error {
	switch scalar {
	case "Int":
		switch v := value.(type) {
		case string:
			return gqlerror.ErrorPathf(path, "Int cannot represent a string (%.20q): send a JSON number", v)
		case int64:
			if v < math.MinInt32 || v > math.MaxInt32 {
				return gqlerror.ErrorPathf(path, "Int cannot represent %d: it is a 32-bit integer", v)
			}
		}
	case "Float":
		if v, ok := value.(string); ok {
			return gqlerror.ErrorPathf(path, "Float cannot represent a string (%.20q): send a JSON number", v)
		}
	}
	return nil
}
