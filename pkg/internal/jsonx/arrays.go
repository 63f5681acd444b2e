package jsonx

// The column arrays of Chroma's get answers and of archive batch entries,
// decoded as encoding/json decodes them into Go slices: null is a nil
// slice, [] an empty one, and a null element is the element's zero value.

// Strings reads null or an array of strings.
func (s *Scanner) Strings() ([]string, error) {
	out := []string{}
	null, err := s.Array(func() error {
		if s.Literal("null") {
			out = append(out, "")
			return nil
		}
		v, err := s.String()
		out = append(out, v)
		return err
	})
	if null || err != nil {
		return nil, err
	}
	return out, nil
}

// NullableStrings reads null or an array of strings and nulls.
func (s *Scanner) NullableStrings() ([]*string, error) {
	out := []*string{}
	null, err := s.Array(func() error {
		if s.Literal("null") {
			out = append(out, nil)
			return nil
		}
		v, err := s.String()
		out = append(out, &v)
		return err
	})
	if null || err != nil {
		return nil, err
	}
	return out, nil
}

// Ints reads null or an array of integers.
func (s *Scanner) Ints() ([]int, error) {
	out := []int{}
	null, err := s.Array(func() error {
		if s.Literal("null") {
			out = append(out, 0)
			return nil
		}
		n, err := s.Int()
		out = append(out, int(n))
		return err
	})
	if null || err != nil {
		return nil, err
	}
	return out, nil
}

// ScalarObjects reads null or an array of ScalarObject values.
func ScalarObjects[M ~map[string]any](s *Scanner) ([]M, error) {
	out := []M{}
	null, err := s.Array(func() error {
		m, err := s.ScalarObject()
		out = append(out, m)
		return err
	})
	if null || err != nil {
		return nil, err
	}
	return out, nil
}
