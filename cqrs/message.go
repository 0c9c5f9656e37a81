package cqrs

import (
	"reflect"
	"strconv"
	"unsafe"
)

// nameOf returns the name of message type t on a bus of the given kind: the
// name the type declares with CommandName, QueryName or EventName, or else
// its Go type.
func nameOf(t reflect.Type, kind Kind) string {
	// Try a usable value of every type whose method set may hold the
	// method: a non-nil pointer for a pointer type, else the value and a
	// pointer to it.
	var candidates []reflect.Value
	if t.Kind() == reflect.Pointer {
		candidates = []reflect.Value{reflect.New(t.Elem())}
	} else {
		candidates = []reflect.Value{reflect.Zero(t), reflect.New(t)}
	}
	for _, v := range candidates {
		if name := declaredName(v.Interface(), kind); name != "" {
			return name
		}
	}
	return t.String()
}

// Key returns the identity of the registration s describes: its kind and
// the full import path of its message type, such as
// "command github.com/acme/shop/orders.PlaceOrder", whatever name the type
// declares. Two message types that print alike, from two packages of the
// same name, have different keys, and so do the registrations of one type
// on a command and on a query bus. Key state kept per message type (a
// breaker, a limiter, a metrics series) by Key, or by Kind and
// MessageType; [Spec.Name] is for people and may be chosen by the type.
//
// Types declared inside functions are the exception: two of the same name
// in one package have the same key. Unnamed struct, func and interface
// types are written as %T writes them.
//
// An event's subscribers each have a key of their own, which ends with the
// subscriber's name: "event github.com/acme/shop/orders.OrderPlaced to email".
func (s Spec) Key() string {
	if s.Subscriber != "" {
		return s.Kind.String() + " " + typePath(s.MessageType) + " to " + s.Subscriber
	}
	return s.Kind.String() + " " + typePath(s.MessageType)
}

// FullName returns the name of the message type s describes with its full
// import path, such as "github.com/acme/shop/orders.PlaceOrder", whatever
// name the type declares: what to show where two types would print alike.
func FullName(s Spec) string { return typePath(s.MessageType) }

// typePath writes t as %T does, but with the full import path of every
// named type in it, as reflect writes the type arguments of a generic
// type.
func typePath(t reflect.Type) string {
	if t == nil {
		return "<nil>"
	}
	if name := t.Name(); name != "" {
		if t.PkgPath() == "" {
			return name // predeclared, such as int or error
		}
		return t.PkgPath() + "." + name
	}
	switch t.Kind() {
	case reflect.Pointer:
		return "*" + typePath(t.Elem())
	case reflect.Slice:
		return "[]" + typePath(t.Elem())
	case reflect.Array:
		return "[" + strconv.Itoa(t.Len()) + "]" + typePath(t.Elem())
	case reflect.Map:
		return "map[" + typePath(t.Key()) + "]" + typePath(t.Elem())
	case reflect.Chan:
		switch t.ChanDir() {
		case reflect.RecvDir:
			return "<-chan " + typePath(t.Elem())
		case reflect.SendDir:
			return "chan<- " + typePath(t.Elem())
		default:
			return "chan " + typePath(t.Elem())
		}
	default:
		return t.String()
	}
}

// declaredName calls v's CommandName or QueryName method, if it has the one
// for kind. A method that panics on a zero value declares nothing.
func declaredName(v any, kind Kind) (name string) {
	defer func() {
		if recover() != nil {
			name = ""
		}
	}()
	switch kind {
	case KindCommand:
		if n, ok := v.(interface{ CommandName() string }); ok {
			return n.CommandName()
		}
	case KindQuery:
		if n, ok := v.(interface{ QueryName() string }); ok {
			return n.QueryName()
		}
	case KindEvent:
		if n, ok := v.(interface{ EventName() string }); ok {
			return n.EventName()
		}
	}
	return ""
}

// nilKind says whether a message of some type can be nil.
type nilKind uint8

const (
	neverNil nilKind = iota // structs, numbers, strings, arrays…
	mayBeNil                // pointers, channels, maps, funcs, slices
)

func nilKindOf(t reflect.Type) nilKind {
	switch t.Kind() {
	case reflect.Pointer, reflect.Chan, reflect.UnsafePointer, reflect.Map, reflect.Slice, reflect.Func:
		return mayBeNil
	default:
		return neverNil
	}
}

// isNil reports whether the message at p, of a type whose nilKind is k,
// is nil. Every kind that can be nil (pointer, channel, map, func, slice)
// starts with a pointer that is nil exactly when the value is, so one
// function serves every message type, without boxing the message.
func isNil(k nilKind, p unsafe.Pointer) bool {
	return k != neverNil && *(*unsafe.Pointer)(p) == nil
}

// isNilValue reports whether v is a nil interface or holds a nil pointer,
// func, map, slice, channel or interface.
func isNilValue(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	default:
		return false
	}
}
