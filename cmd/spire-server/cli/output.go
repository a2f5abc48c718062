package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// printProtoJSON writes msgs the way SPIRE's "-output json" does: protojson
// with proto field names and unpopulated fields, nulls dropped, one JSON
// value per line (an array when there is more than one message).
func printProtoJSON(w io.Writer, msgs ...proto.Message) error {
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	values := make([]any, 0, len(msgs))
	for _, m := range msgs {
		b, err := opts.Marshal(m)
		if err != nil {
			return fmt.Errorf("cli: marshal %T: %w", m, err)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("cli: reparse %T: %w", m, err)
		}
		values = append(values, dropNulls(v))
	}
	enc := json.NewEncoder(w)
	if len(values) == 1 {
		return enc.Encode(values[0])
	}
	return enc.Encode(values)
}

// dropNulls removes null members and array items, as SPIRE does, so that
// unset message fields do not appear as "null".
func dropNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if val == nil {
				delete(t, k)
				continue
			}
			t[k] = dropNulls(val)
		}
		return t
	case []any:
		out := make([]any, 0, len(t))
		for _, val := range t {
			if val != nil {
				out = append(out, dropNulls(val))
			}
		}
		return out
	}
	return v
}

// printStructJSON writes a non-proto result as a one-element JSON array,
// matching SPIRE's struct printer.
func printStructJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode([]any{v})
}
