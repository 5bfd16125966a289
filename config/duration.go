package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// DurationUnits names the units ParseDuration accepts, for messages.
const DurationUnits = `ms, s, m, h, d (days) or y (365 days), like "10s", "2m", "12h" or "30d"`

// maxDays bounds "Nd" and "Ny" so the result fits a time.Duration with room.
const maxDays = 100 * 365

// ParseDuration reads a duration the way every Postern config key and
// command-line flag does: a Go duration ("10s", "1h30m"), or a whole number
// of days ("30d") or years ("10y", 365 days each). Negative values are
// refused; zero is returned as is (callers decide whether it means "default").
// The error names the accepted units.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if num, unit, ok := cutDayUnit(t); ok {
		n, err := strconv.Atoi(num)
		if err == nil && n < 0 {
			return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
		}
		if err != nil || len(num) > 6 {
			return 0, durationError(s)
		}
		if unit == "y" {
			n *= 365
		}
		if n > maxDays {
			return 0, fmt.Errorf("invalid duration %q: at most 100 years", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		if strings.HasPrefix(t, "-") {
			return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
		}
		return 0, durationError(s)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: must not be negative", s)
	}
	return d, nil
}

// cutDayUnit splits "30d" into "30", "d"; ok is false for anything that is
// not digits followed by d or y.
func cutDayUnit(s string) (num, unit string, ok bool) {
	if len(s) < 2 {
		return "", "", false
	}
	unit = s[len(s)-1:]
	if unit != "d" && unit != "y" {
		return "", "", false
	}
	num = s[:len(s)-1]
	if strings.TrimLeft(num, "-0123456789") != "" {
		return "", "", false
	}
	return num, unit, true
}

func durationError(s string) error {
	return fmt.Errorf("invalid duration %q: use a number with a unit: %s", s, DurationUnits)
}

// FormatDuration writes d the way ParseDuration reads it, in years or days
// when it is a whole number of them.
func FormatDuration(d time.Duration) string {
	const day, year = 24 * time.Hour, 365 * 24 * time.Hour
	switch {
	case d == 0:
		return "0"
	case d%year == 0:
		return fmt.Sprintf("%dy", d/year)
	case d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	}
	return d.String()
}
