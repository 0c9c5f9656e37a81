package middleware

import (
	"context"
	"errors"
	"reflect"
	"sync"

	"github.com/go-playground/validator/v10"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ValidationConfig configures [Validation].
type ValidationConfig struct {
	// Validator checks the struct tags. Nil means one instance shared by
	// the package, made with [validator.WithRequiredStructEnabled]. A
	// validator caches what it learns of each struct type, so share one;
	// never make one per call.
	Validator *validator.Validate
}

// validatable is a message that checks itself.
type validatable interface{ Validate() error }

var sharedValidator = sync.OnceValue(func() *validator.Validate {
	return validator.New(validator.WithRequiredStructEnabled())
})

// Validation returns an interceptor that checks each message before the
// handler runs: its `validate:"…"` struct tags, with
// github.com/go-playground/validator/v10, and then its own Validate() error
// method, if it has one (on the type or its pointer). A message that fails
// gets a [*ValidationError] and its handler is not called.
//
// What to check is decided once per message type, when its handler is
// registered: a type with neither tags nor a Validate method passes
// straight through at no cost.
func Validation(cfg ValidationConfig) cqrs.Interceptor {
	v := cfg.Validator
	if v == nil {
		v = sharedValidator()
	}
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		tags := hasValidateTags(spec.MessageType, map[reflect.Type]bool{})
		method := spec.MessageType.Implements(validatableType)
		ptrMethod := !method && reflect.PointerTo(spec.MessageType).Implements(validatableType)
		if !tags && !method && !ptrMethod {
			return next
		}
		return func(ctx context.Context, c cqrs.Call) error {
			msg := c.Message()
			if tags {
				if err := v.StructCtx(ctx, msg); err != nil {
					return validationError(spec, err)
				}
			}
			if method || ptrMethod {
				if err := selfValidate(msg, ptrMethod); err != nil {
					return &ValidationError{Message: spec.String(), Err: err}
				}
			}
			return next(ctx, c)
		}
	})
}

var validatableType = reflect.TypeFor[validatable]()

// selfValidate calls msg's Validate method; ptr says that the method is on
// the pointer type, so msg must be copied to be addressable.
func selfValidate(msg any, ptr bool) error {
	if ptr {
		p := reflect.New(reflect.TypeOf(msg))
		p.Elem().Set(reflect.ValueOf(msg))
		msg = p.Interface()
	}
	m, ok := msg.(validatable)
	if !ok {
		return nil
	}
	return m.Validate()
}

func validationError(spec cqrs.Spec, err error) error {
	var fields validator.ValidationErrors
	if !errors.As(err, &fields) {
		// Not a failed rule but a misuse of the validator, such as a
		// malformed tag: report it with the sentinel all the same.
		return &ValidationError{Message: spec.String(), Err: err}
	}
	out := &ValidationError{Message: spec.String(), Err: err, Fields: make([]FieldError, len(fields))}
	for i, f := range fields {
		out.Fields[i] = FieldError{Field: f.Namespace(), Tag: f.Tag(), Param: f.Param(), Value: f.Value()}
	}
	return out
}

// hasValidateTags reports whether t, a struct or a pointer to one, has a
// validate tag on any field, its nested structs' included.
func hasValidateTags(t reflect.Type, seen map[reflect.Type]bool) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return false
	}
	seen[t] = true
	for i := range t.NumField() {
		f := t.Field(i)
		if _, ok := f.Tag.Lookup("validate"); ok {
			return true
		}
		if hasValidateTags(f.Type, seen) {
			return true
		}
	}
	return false
}
