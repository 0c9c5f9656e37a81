package middleware

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// MaxConfigSize is the largest config [ParseConfig] and [LoadConfig]
// read, in bytes: 64 KiB, some hundred times the size of a full config.
const MaxConfigSize = 64 << 10

// ParseConfig reads a Config from YAML or JSON (a JSON document is also a
// YAML one). Durations are strings such as "250ms" or "2s"; log levels
// are names such as "info" or "debug". A key left out, or given no value
// ("timeout:"), takes its default; a key that is given must work as
// given: the rule of [Config.Validate], under which a written 0 that
// would stand for a default ("max_attempts: 0", which would mean 3) is
// refused, as is a negative duration.
//
// It refuses, with an error wrapping [ErrConfig] that names the setting
// and its line, what it was, what is accepted and what to write instead:
// data larger than [MaxConfigSize]; more than one document; an unknown or
// repeated key; an alias or a merge key; a value of the wrong type; a NaN
// or infinite number; and any setting out of range. Its time is linear in
// the size of data.
func ParseConfig(data []byte) (Config, error) {
	if len(data) > MaxConfigSize {
		return Config{}, fmt.Errorf("%w: %d bytes, larger than the %d a config may have", ErrConfig, len(data), MaxConfigSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, nil // an empty file: every part off
		}
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		line := next.Line
		if err != nil {
			line = 0
		}
		return Config{}, fmt.Errorf("%w: a second document%s: a config is one document", ErrConfig, at(line))
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		return Config{}, nil
	}
	lines := make(map[string]int)
	if err := check(root, reflect.TypeFor[Config](), "", lines); err != nil {
		return Config{}, err
	}
	var c Config
	if err := root.Decode(&c); err != nil { // check has ruled out what Decode refuses
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := c.validate(lines); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadConfig reads a Config from the YAML or JSON file at path; see
// [ParseConfig]. A file larger than [MaxConfigSize] is refused unread.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return c, nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	levelType    = reflect.TypeFor[slog.Level]()
)

// movedKeys are top-level keys of an older Config, with where they went.
var movedKeys = map[string]string{
	"retry": "retry is set per kind now: under queries: (or commands:, for idempotent commands only)",
	"cache": "cache is set under queries:",
}

// check walks the YAML tree n against the type t of what it will be
// decoded into, once, and reports the first key or value that decoding
// would refuse or that is no valid setting, by its path. It records in
// lines the line of every setting given a value, by its path.
func check(n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return fmt.Errorf("%w: %s%s: anchors and aliases are not supported in a config", ErrConfig, name(path), at(n.Line))
	}
	if isNull(n) {
		return nil // "key:" with no value leaves the setting unset
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return checkDuration(n, path)
	case t == levelType:
		return checkText(n, t, path, `a level: "debug", "info", "warn" or "error"`)
	case t.Kind() == reflect.Struct:
		return checkStruct(n, t, path, lines)
	}
	if n.Kind != yaml.ScalarNode {
		return wrongValue(n, path, kindName(t))
	}
	switch t.Kind() {
	case reflect.Bool:
		var b bool
		if n.Tag != "!!bool" || n.Decode(&b) != nil {
			return wrongValue(n, path, "true or false")
		}
	case reflect.Int, reflect.Int64, reflect.Uint32:
		if n.Tag != "!!int" {
			return wrongValue(n, path, "a whole number")
		}
		v := reflect.New(t)
		if n.Decode(v.Interface()) != nil {
			return wrongValue(n, path, fmt.Sprintf("a whole number that fits a %s", t))
		}
	case reflect.Float64:
		var f float64
		if (n.Tag != "!!float" && n.Tag != "!!int") || n.Decode(&f) != nil {
			return wrongValue(n, path, "a number")
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return wrongValue(n, path, "a finite number")
		}
	default:
		return wrongValue(n, path, kindName(t))
	}
	return nil
}

func checkStruct(n *yaml.Node, t reflect.Type, path string, lines map[string]int) error {
	if n.Kind != yaml.MappingNode {
		return wrongValue(n, path, "a mapping of settings")
	}
	fields := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		key, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if key != "" && key != "-" {
			fields[key] = t.Field(i).Type
		}
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
			return fmt.Errorf("%w: %s%s: a key must be a plain name", ErrConfig, name(path), at(k.Line))
		}
		sub := k.Value
		if path != "" {
			sub = path + "." + k.Value
		}
		if line, dup := seen[k.Value]; dup {
			return fmt.Errorf("%w: %s%s: repeated (first at line %d)", ErrConfig, sub, at(k.Line), line)
		}
		seen[k.Value] = k.Line
		ft, ok := fields[k.Value]
		if !ok {
			if hint, moved := movedKeys[sub]; moved {
				return fmt.Errorf("%w: %s%s: %s", ErrConfig, sub, at(k.Line), hint)
			}
			known := make([]string, 0, len(fields))
			for f := range fields {
				known = append(known, f)
			}
			slices.Sort(known)
			return fmt.Errorf("%w: %s%s: unknown setting; %s has %s", ErrConfig, sub, at(k.Line), name(path), strings.Join(known, ", "))
		}
		if err := check(v, ft, sub, lines); err != nil {
			return err
		}
		if !isNull(v) {
			lines[sub] = k.Line
		}
	}
	return nil
}

func checkDuration(n *yaml.Node, path string) error {
	const want = `a duration such as "250ms", "2s" or "1m"`
	if n.Kind != yaml.ScalarNode {
		return wrongValue(n, path, want)
	}
	if n.Tag == "!!int" && n.Value == "0" {
		// What the decoder takes for a duration: Config.validate then
		// says what to write instead of a 0.
		n.Tag, n.Value = "!!str", "0s"
		return nil
	}
	if n.Tag != "!!str" {
		return wrongValue(n, path, want+" (a number needs a unit)")
	}
	if _, err := time.ParseDuration(n.Value); err != nil {
		return wrongValue(n, path, want)
	}
	return nil
}

func checkText(n *yaml.Node, t reflect.Type, path, want string) error {
	if n.Kind != yaml.ScalarNode {
		return wrongValue(n, path, want)
	}
	v := reflect.New(t)
	u, ok := v.Interface().(encoding.TextUnmarshaler)
	if !ok || u.UnmarshalText([]byte(n.Value)) != nil {
		return wrongValue(n, path, want)
	}
	return nil
}

// wrongValue reports that node n at path is not what the setting takes.
func wrongValue(n *yaml.Node, path, want string) error {
	got := n.Value
	switch n.Kind {
	case yaml.MappingNode:
		got = "a mapping"
	case yaml.SequenceNode:
		got = "a list"
	default:
		got = strconv.Quote(got)
	}
	return fmt.Errorf("%w: %s%s: got %s, want %s", ErrConfig, name(path), at(n.Line), got, want)
}

func kindName(t reflect.Type) string { return "a " + t.Kind().String() }

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func name(path string) string {
	if path == "" {
		return "the config"
	}
	return path
}

func at(line int) string {
	if line == 0 {
		return ""
	}
	return fmt.Sprintf(" (line %d)", line)
}
