package snapshotter

import "testing"

func TestBalancePages(t *testing.T) {
	for _, tc := range []struct {
		count              int64
		limit, size, pages int
	}{
		{0, 2500, 2500, 0},
		{1, 2500, 1, 1},
		{2458, 2500, 2458, 1},
		{2458, 1598, 1229, 2},
		{2459, 1598, 1230, 2},
		{50000, 1771, 1725, 29},
	} {
		size, pages := balancePages(tc.count, tc.limit)
		if size != tc.size || pages != tc.pages {
			t.Errorf("balancePages(%d, %d) = %d x %d, want %d x %d", tc.count, tc.limit, pages, size, tc.pages, tc.size)
		}
		if tc.count > 0 && (int64(size*pages) < tc.count || int64(size*(pages-1)) >= tc.count || size > tc.limit) {
			t.Errorf("balancePages(%d, %d) = %d x %d does not cover the records in the fewest pages", tc.count, tc.limit, pages, size)
		}
	}
}
