package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a string ("10s", "1m30s", "30d");
// see ParseDuration.
//
// A bare TOML integer is rejected: the TOML decoder would otherwise read 10 as
// ten nanoseconds, which is never what a person meant. So is a zero
// duration: no key means "no time at all", and letting "0s" stand for the
// default would surprise; leave the key out for its default.
type Duration time.Duration

// UnmarshalTOML implements toml.Unmarshaler.
func (d *Duration) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("duration must be a string with a unit: %s (got %v)", DurationUnits, v)
	}
	parsed, err := ParseDuration(s)
	if err != nil {
		return err
	}
	if parsed == 0 {
		return fmt.Errorf("duration %q is zero: leave the key out for its default (see the config reference)", s)
	}
	*d = Duration(parsed)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// Size is a byte count written as an integer or a string with a unit
// ("4MiB", "512KiB", "16MB").
type Size int64

var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// UnmarshalTOML implements toml.Unmarshaler.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("size %d must not be negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		n, err := parseSize(x)
		if err != nil {
			return err
		}
		*s = Size(n)
		return nil
	}
	return fmt.Errorf("size must be an integer number of bytes or a string like \"4MiB\" (got %v)", v)
}

func parseSize(str string) (int64, error) {
	t := strings.TrimSpace(str)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 || n > (1<<40)/u.factor {
				break
			}
			return n * u.factor, nil
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: use bytes or a unit, like \"4MiB\"", str)
	}
	return n, nil
}

// Address is a host:port. The host may be empty ("":7443 listens on all
// addresses), an IPv6 literal in brackets ("[::1]:7443") or a name; the
// port must be a number. A [[forward]]'s listen and a [[service]]'s target
// may also be a Unix socket, "unix:PATH" (see UnixPrefix).
type Address string

// UnmarshalTOML implements toml.Unmarshaler.
func (a *Address) UnmarshalTOML(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("address must be a string \"host:port\" (got %v)", v)
	}
	check := checkAddress
	if strings.HasPrefix(s, UnixPrefix) {
		check = checkUnix
	}
	if err := check(s); err != nil {
		return err
	}
	*a = Address(s)
	return nil
}

func checkAddress(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Errorf("%q: %s%s", s, ae.Err, didYouMean(suggestAddress(s)))
		}
		return fmt.Errorf("%q: %v", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (n == 0 && port != "0") {
		return fmt.Errorf("%q: port %q is not a number from 1 to 65535", s, port)
	}
	return nil
}

// String returns the address as written.
func (a Address) String() string { return string(a) }
