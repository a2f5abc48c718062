package hclconf

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a SPIRE duration: Go syntax ("90s", "1h30m",
// "168h"). The error says how to write the value, and turns a day count such
// as "7d" (a common mistake: Go has no day unit) into the hours to write.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err == nil {
		return d, nil
	}
	example := "1h30m"
	if days, ok := strings.CutSuffix(strings.TrimSpace(s), "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 && n < 1<<20 {
			example = strconv.Itoa(n*24) + "h"
		}
	}
	return 0, fmt.Errorf("invalid duration %q (use Go duration syntax such as %q)", s, example)
}

// ParsePort parses a TCP port written as a number or a string ("8081").
// Zero is accepted: it asks the kernel for a free port, which tests need.
func ParsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q (use a number from 1 to 65535)", s)
	}
	return n, nil
}

// ParseLogLevel parses SPIRE's log levels, case-insensitively. "WARNING" is
// accepted as WARN because SPIRE's logger accepts it too.
func ParseLogLevel(s string) (slog.Level, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DEBUG":
		return slog.LevelDebug, nil
	case "INFO":
		return slog.LevelInfo, nil
	case "WARN", "WARNING":
		return slog.LevelWarn, nil
	case "ERROR":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("invalid log level %q (use DEBUG, INFO, WARN or ERROR)", s)
}

// Log formats accepted by ParseLogFormat.
const (
	LogFormatText = "text"
	LogFormatJSON = "json"
)

// ParseLogFormat parses "text" or "json", case-insensitively, and returns
// it in lower case.
func ParseLogFormat(s string) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(s)); f {
	case LogFormatText, LogFormatJSON:
		return f, nil
	}
	return "", fmt.Errorf("invalid log format %q (use text or json)", s)
}

// suggest returns the known key closest to key when it is close enough to be
// a typo, so "unknown key" can say what was probably meant.
func suggest(key string, known []string) string {
	best, bestDist := "", 3
	lk := strings.ToLower(key)
	for _, k := range known {
		if d := editDistance(lk, strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, capped in practice by the
// short keys it is used on.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		if a == b {
			return 0
		}
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
