package bus

import (
	"fmt"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/disk"
)

// NearLimit describes what's storage, used bytes of a limit of limit
// bytes, when it stands at share of the limit or more ("account storage
// 930 MiB of 1.0 GiB (93%)"); "" when it is under, or limit is none (0 or
// less).
func NearLimit(what string, used uint64, limit int64, share float64) string {
	if limit <= 0 || float64(used) < share*float64(limit) {
		return ""
	}
	return fmt.Sprintf("%s %s of %s (%.0f%%)", what, disk.Size(used), disk.Size(uint64(limit)), 100*float64(used)/float64(limit))
}
