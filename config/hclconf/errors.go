package hclconf

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Error is one problem found in a configuration file or in a command-line
// flag. Callers can find it with errors.As on the error returned by a parse.
type Error struct {
	// File is the file name as the caller gave it; empty for flag errors.
	File string
	// Line is 1-based; 0 when the problem has no single line (a missing key).
	Line int
	// Key is the dotted key, e.g. "server.ca_ttl", or "-trustDomain" for a flag.
	Key string
	// Msg is the full message after the location: it starts with the key and
	// ends with the fix in parentheses.
	Msg string
}

// Error renders "file:line: msg", dropping the parts that are unknown.
func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		if loc != "" {
			loc += ":"
		}
		loc += strconv.Itoa(e.Line)
	}
	if loc == "" {
		return e.Msg
	}
	return loc + ": " + e.Msg
}

// Diagnostics collects the errors and warnings found while reading one file,
// so that an operator sees every mistake at once instead of one per restart.
type Diagnostics struct {
	file     string
	errs     []error
	warnings []string
}

// NewDiagnostics returns an empty collector for the named file.
func NewDiagnostics(file string) *Diagnostics {
	return &Diagnostics{file: file}
}

// File is the file name given to NewDiagnostics.
func (d *Diagnostics) File() string { return d.file }

// Errorf records "key: <message>" at line (0 when unknown).
func (d *Diagnostics) Errorf(line int, key, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: key, Msg: key + ": " + fmt.Sprintf(format, args...)})
}

// Missing records that a required key has no value; fix says how to set it.
func (d *Diagnostics) Missing(key, fix string) {
	d.errs = append(d.errs, &Error{File: d.file, Key: key, Msg: fmt.Sprintf("%s is required (%s)", key, fix)})
}

// FlagErrorf records a problem with a command-line flag; it has no file.
func (d *Diagnostics) FlagErrorf(flag, format string, args ...any) {
	key := "-" + flag
	d.errs = append(d.errs, &Error{Key: key, Msg: "flag " + key + ": " + fmt.Sprintf(format, args...)})
}

// Warnf records a warning about key at line, formatted like an error.
func (d *Diagnostics) Warnf(line int, key, format string, args ...any) {
	e := &Error{File: d.file, Line: line, Key: key, Msg: key + ": " + fmt.Sprintf(format, args...)}
	d.warnings = append(d.warnings, e.Error())
}

// HasErrors reports whether any error was recorded.
func (d *Diagnostics) HasErrors() bool { return len(d.errs) > 0 }

// Err joins every recorded error (nil when there is none), in line order
// with line-less ones last; each one can be reached with errors.As(err,
// **Error).
func (d *Diagnostics) Err() error {
	errs := slices.Clone(d.errs)
	slices.SortStableFunc(errs, func(a, b error) int {
		return cmp.Compare(sortLine(a), sortLine(b))
	})
	return errors.Join(errs...)
}

func sortLine(err error) int {
	var e *Error
	if errors.As(err, &e) && e.Line > 0 {
		return e.Line
	}
	return math.MaxInt
}

// Warnings returns the recorded warnings in the order they were found.
func (d *Diagnostics) Warnings() []string { return append([]string(nil), d.warnings...) }
