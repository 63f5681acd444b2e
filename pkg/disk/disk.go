// Package disk reports free space on the file systems the services depend on.
package disk

import (
	"fmt"
	"syscall"
)

// Free returns the bytes available to unprivileged users on path's file system.
func Free(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
