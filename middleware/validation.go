package middleware

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/go-playground/validator/v10"

	"github.com/typedcqrs/dispatch/cqrs"
)

// ValidationConfig configures [Validation]. A field left zero takes the
// default its comment gives. A ValidationConfig is a plain value; its zero
// value checks with the package's shared validator.
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
//
// The validator walks the message, so a message whose type can reach
// itself (a *Node whose Child is a *Node) or holds an interface is first
// checked, in time linear in its size: one that holds a cycle, or is
// nested deeper than 1000 levels, fails validation with a
// [*ValidationError] rather than recurse without end. Only exported
// fields are walked, as the validator walks them.
//
// The interceptor is safe for concurrent use, as the validator is.
func Validation(cfg ValidationConfig) cqrs.Interceptor {
	v := cfg.Validator
	if v == nil {
		v = sharedValidator()
	}
	return cqrs.InterceptorFunc(func(spec cqrs.Spec, next cqrs.Invoker) cqrs.Invoker {
		tags := hasValidateTags(spec.MessageType, map[reflect.Type]bool{})
		// The validator recurses through the value: bound it where the
		// type lets a value hold a cycle or nest without end.
		bound := tags && mayRecur(spec.MessageType, map[reflect.Type]bool{}, map[reflect.Type]bool{})
		method := spec.MessageType.Implements(validatableType)
		ptrMethod := !method && reflect.PointerTo(spec.MessageType).Implements(validatableType)
		if !tags && !method && !ptrMethod {
			return next
		}
		return func(ctx context.Context, c cqrs.Call) error {
			msg := c.Message()
			if bound {
				if err := bounded(msg); err != nil {
					return &ValidationError{Message: spec.String(), Err: err}
				}
			}
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

// maxDepth bounds how deep a message the validator is given may nest.
const maxDepth = 1000

var (
	errCycle   = errors.New("middleware: validation: the message holds a cycle")
	errTooDeep = fmt.Errorf("middleware: validation: the message is nested deeper than %d levels", maxDepth)
)

// mayRecur reports whether a value of type t may hold a cycle or nest
// without bound: whether t reaches itself, or an interface, through its
// exported fields and elements.
func mayRecur(t reflect.Type, path, done map[reflect.Type]bool) bool {
	if t.Kind() == reflect.Interface || path[t] {
		return true
	}
	if done[t] {
		return false
	}
	path[t] = true
	defer func() { delete(path, t); done[t] = true }()
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return mayRecur(t.Elem(), path, done)
	case reflect.Map:
		return mayRecur(t.Key(), path, done) || mayRecur(t.Elem(), path, done)
	case reflect.Struct:
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() && mayRecur(f.Type, path, done) {
				return true
			}
		}
	}
	return false
}

// bounded returns errCycle if msg holds a cycle and errTooDeep if it nests
// deeper than maxDepth, visiting each part it points to once.
func bounded(msg any) error {
	w := walker{onPath: map[ref]bool{}, done: map[ref]bool{}}
	return w.walk(reflect.ValueOf(msg), 0)
}

// ref is a part of a value that others may point to.
type ref struct {
	at  unsafe.Pointer
	typ reflect.Type
}

type walker struct {
	onPath, done map[ref]bool
}

func (w *walker) walk(v reflect.Value, depth int) error {
	if depth > maxDepth {
		return errTooDeep
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Map:
		if v.IsNil() {
			return nil
		}
		r := ref{at: v.UnsafePointer(), typ: v.Type()}
		if w.onPath[r] {
			return errCycle
		}
		if w.done[r] {
			return nil
		}
		w.onPath[r] = true
		err := w.children(v, depth)
		delete(w.onPath, r)
		w.done[r] = true
		return err
	case reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return w.walk(v.Elem(), depth+1)
	case reflect.Struct, reflect.Array:
		return w.children(v, depth)
	}
	return nil
}

// children walks what v holds.
func (w *walker) children(v reflect.Value, depth int) error {
	switch v.Kind() {
	case reflect.Pointer:
		return w.walk(v.Elem(), depth+1)
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if err := w.walk(v.Index(i), depth+1); err != nil {
				return err
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if err := w.walk(it.Key(), depth+1); err != nil {
				return err
			}
			if err := w.walk(it.Value(), depth+1); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range v.NumField() {
			if !t.Field(i).IsExported() {
				continue
			}
			if err := w.walk(v.Field(i), depth); err != nil { // a field nests no deeper
				return err
			}
		}
	}
	return nil
}
