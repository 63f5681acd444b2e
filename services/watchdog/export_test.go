package watchdog

import (
	"sync"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/contract"
)

// HangAfterRecordWrite holds every instance, as if it had died, right
// after it writes a migration record for which hang returns true, until
// release is called (before the instances are stopped).
func HangAfterRecordWrite(hang func(rec *contract.MigrationRecord) bool) (release func()) {
	released := make(chan struct{})
	hook := func(rec *contract.MigrationRecord) {
		if hang(rec) {
			<-released
		}
	}
	afterRecordWrite.Store(&hook)
	var once sync.Once
	return func() {
		once.Do(func() {
			afterRecordWrite.Store(nil)
			close(released)
		})
	}
}
