package announce

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Encode is a table's wire form. The same table always encodes to the same
// bytes (struct fields in order, slices as their author sorted them).
func Encode(t Table) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encoding the table of host %s: %w", t.Host, err)
	}
	return b, nil
}

// Decode reads a table another host encoded and refuses one over the
// bounds, with a *LimitError, before anything acts on it.
func Decode(b []byte) (Table, error) {
	if len(b) > MaxTableBytes {
		return Table{}, &LimitError{Host: "(not decoded)", What: "bytes", Count: len(b), Limit: MaxTableBytes}
	}
	var t Table
	if err := json.Unmarshal(b, &t); err != nil {
		return Table{}, fmt.Errorf("decoding table: %w", err)
	}
	if err := Check(t, len(b)); err != nil {
		return t, err
	}
	return t, nil
}

// IsLimit reports whether err is a table refused for its bounds.
func IsLimit(err error) bool {
	var le *LimitError
	return errors.As(err, &le)
}
