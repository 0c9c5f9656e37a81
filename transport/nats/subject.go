package nats

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/typedcqrs/dispatch/cqrs"
)

// maxSubject bounds the length of a subject this package makes, in
// bytes. NATS reads a message's subject in its protocol line, which it
// bounds (4 KiB by default), and closes the connection that sends a longer
// one: with it every other message type on that connection.
const maxSubject = 1024

// Subject returns the subject a message type travels on:
// prefix.kind.identity, such as
// "cqrs.command.github.com/acme/orders.PlaceOrder".
//
// The identity is the message's Go type with its full package path, not
// its name: two types called orders.PlaceOrder in different packages, or
// two types that declare the same CommandName, never share a subject. The
// name ([cqrs.Spec.Name]) is for people: errors, logs and metrics. Both
// sides find the same subject because they share the message type,
// imported from one package; moving a message type to another package
// changes its subject.
//
// The identity is encoded injectively, one byte at a time: letters,
// digits, '-', '_' and '/' stay as they are, a dot stays a dot (a token
// separator) where it separates two non-empty tokens, and every other
// byte becomes '%' and two upper-case hex digits, as in a URL. So two
// distinct types get distinct subjects under one prefix, and a subject
// never holds a NATS wildcard or white space. Services that share one
// NATS keep their subjects apart by type already; give each its own
// prefix ([WithPrefix]) as well, so that their queue groups, stats
// subjects and permissions stay apart too.
//
// [Serve] and [Forward] refuse, with [ErrInvalidSubject], a type whose
// subject would be longer than 1 KiB, an instance of a generic type (the
// reflect package names its type arguments without their package paths,
// so the identity would not be injective), and an unnamed type other than
// a pointer, slice, array or map of such types. Subject itself returns
// what it can for them.
func Subject(prefix string, spec cqrs.Spec) string {
	subject, _ := subjectOf(prefix, "", spec)
	return subject
}

// subjectOf returns the subject of spec under prefix, with infix (such as
// "durable.") between the prefix and the kind, and an error wrapping
// ErrInvalidSubject when the type cannot have one. Subject and
// DurableSubject both build theirs here.
func subjectOf(prefix, infix string, spec cqrs.Spec) (string, error) {
	id, err := identity(spec.MessageType)
	subject := prefix + "." + infix + spec.Kind.String() + "." + encodeToken(id)
	if err == nil && len(subject) > maxSubject {
		err = fmt.Errorf("its subject would be %d bytes long, over the limit of %d", len(subject), maxSubject)
	}
	if err != nil {
		return subject, fmt.Errorf("%w: %s: %w", ErrInvalidSubject, spec, err)
	}
	return subject, nil
}

// identity returns the full path of type t, such as
// "github.com/acme/orders.PlaceOrder" or "*github.com/acme/orders.PlaceOrder",
// or an error for a type whose printed form does not tell it apart from
// every other.
func identity(t reflect.Type) (string, error) {
	if t == nil {
		return "", fmt.Errorf("no message type")
	}
	if name := t.Name(); name != "" {
		if strings.ContainsRune(name, '[') {
			return "", fmt.Errorf("%s is an instance of a generic type, whose type arguments reflect names without their packages; declare a non-generic type", t)
		}
		if t.PkgPath() == "" {
			return name, nil // int, string…
		}
		return t.PkgPath() + "." + name, nil
	}
	var inner []reflect.Type
	var form string
	switch t.Kind() {
	case reflect.Pointer:
		form, inner = "*", []reflect.Type{t.Elem()}
	case reflect.Slice:
		form, inner = "[]", []reflect.Type{t.Elem()}
	case reflect.Array:
		form, inner = "["+strconv.Itoa(t.Len())+"]", []reflect.Type{t.Elem()}
	case reflect.Map:
		form, inner = "map[", []reflect.Type{t.Key(), t.Elem()}
	default:
		return "", fmt.Errorf("%s is an unnamed type; declare a named one", t)
	}
	var b strings.Builder
	b.WriteString(form)
	for i, it := range inner {
		id, err := identity(it)
		if err != nil {
			return "", err
		}
		b.WriteString(id)
		if i == 0 && len(inner) == 2 {
			b.WriteByte(']')
		}
	}
	return b.String(), nil
}

// encodeToken encodes s for the end of a subject, injectively: see
// [Subject].
func encodeToken(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isPlain(c):
			b.WriteByte(c)
		case c == '.' && i > 0 && i < len(s)-1 && s[i-1] != '.' && s[i+1] != '.':
			b.WriteByte(c) // separates two non-empty tokens
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
		}
	}
	return b.String()
}

// isPlain reports whether c stands for itself in an encoded token.
func isPlain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/'
}

// checkPrefix returns an error wrapping ErrInvalidSubject unless prefix
// is one or more NATS tokens, separated by dots, with no wildcard, white
// space or control character, and at most 256 bytes long.
func checkPrefix(prefix string) error {
	if len(prefix) > 256 {
		return fmt.Errorf("%w: the prefix is %d bytes long, over the limit of 256", ErrInvalidSubject, len(prefix))
	}
	for token := range strings.SplitSeq(prefix, ".") {
		if token == "" {
			return fmt.Errorf("%w: the prefix %q has an empty token", ErrInvalidSubject, prefix)
		}
		if strings.ContainsAny(token, "*>") || !printable(token) {
			return fmt.Errorf("%w: the prefix %q holds a wildcard, white space or a control character", ErrInvalidSubject, prefix)
		}
	}
	return nil
}

// checkQueueGroup returns an error wrapping ErrInvalidSubject unless name
// can name a NATS queue group.
func checkQueueGroup(name string) error {
	if name == "" || len(name) > 256 || !printable(name) {
		return fmt.Errorf("%w: the queue group %q must be 1 to 256 printable bytes with no white space", ErrInvalidSubject, name)
	}
	return nil
}

// printable reports whether s holds only printable ASCII other than the
// space.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// sanitize keeps letters, digits, '-' and '_', and dots when keepDots;
// anything else becomes '_'. It is lossy: use it for names that only need
// to be valid, never for ones that must stay distinct.
func sanitize(s string, keepDots bool) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		case r == '.' && keepDots:
			return r
		default:
			return '_'
		}
	}, s)
}
