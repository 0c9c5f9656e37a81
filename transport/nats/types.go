package nats

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/typedcqrs/dispatch/cqrs"
)

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// checkFields returns an error wrapping ErrUnexportedFields when codec is
// [JSON] and the message or result type of spec, or a type either holds,
// has an unexported field: encoding/json leaves such a field out, so it
// would arrive zeroed with no error. Other codecs have rules of their own
// (protocol buffers' generated types keep unexported state on purpose),
// so only JSON is checked.
func checkFields(codec Codec, spec cqrs.Spec) error {
	if _, ok := codec.(JSON); !ok {
		return nil
	}
	seen := map[reflect.Type]bool{}
	for _, t := range []reflect.Type{spec.MessageType, spec.ResultType} {
		if field := unexportedField(t, seen); field != "" {
			return fmt.Errorf("%w: %s: %s would arrive zeroed; export it, tag it json:\"-\" on an exported field instead, or give its type MarshalJSON and UnmarshalJSON", ErrUnexportedFields, spec, field)
		}
	}
	return nil
}

// unexportedField returns the first field that JSON would leave out in t
// or a type it holds, as "Type.field", or "".
func unexportedField(t reflect.Type, seen map[reflect.Type]bool) string {
	if t == nil || seen[t] {
		return ""
	}
	seen[t] = true
	if t.Implements(jsonMarshaler) || t.Implements(textMarshaler) ||
		t.Kind() != reflect.Pointer && (reflect.PointerTo(t).Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(textMarshaler)) {
		return "" // the type encodes itself
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
		return unexportedField(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			switch {
			case f.Name == "_":
				continue // padding
			case !f.IsExported() && (!f.Anonymous || indirect(f.Type).Kind() != reflect.Struct):
				return t.String() + "." + f.Name
			case f.Tag.Get("json") == "-":
				continue
			}
			// An exported field, or an embedded type whose exported
			// fields JSON promotes: look inside.
			if field := unexportedField(f.Type, seen); field != "" {
				return field
			}
		}
	}
	return ""
}

// indirect returns the type t points to, or t.
func indirect(t reflect.Type) reflect.Type {
	if t.Kind() == reflect.Pointer {
		return t.Elem()
	}
	return t
}
