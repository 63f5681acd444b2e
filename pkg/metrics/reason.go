package metrics

import "github.com/chromadb-rollback/chromadb-rollback/pkg/contract"

// Reasons of operation_failures_total that are not API error codes.
const (
	ReasonError        = "error"        // an operation failed for a reason not classified
	ReasonVerification = "verification" // the data read back did not match
	ReasonCancelled    = "cancelled"    // an operator cancelled it
	ReasonLeaseLost    = "lease_lost"   // another holder took the tenant/database
	ReasonChroma       = "chroma"       // Chroma failed or could not be reached
	ReasonTimeout      = "timeout"      // a deadline passed
	ReasonGivenUp      = "given_up"     // every delivery of its command died: a crash each attempt repeats
)

// CodeReason names the reason of a refused request by its error code
// (contract.Code*): bad_request, not_found, conflict, too_large,
// verification_failed, unavailable, internal.
func CodeReason(code int) string {
	switch code {
	case contract.CodeBadRequest:
		return "bad_request"
	case contract.CodeNotFound:
		return "not_found"
	case contract.CodeConflict:
		return "conflict"
	case contract.CodeTooLarge:
		return "too_large"
	case contract.CodeVerificationFailed:
		return "verification_failed"
	case contract.CodeUnavailable:
		return "unavailable"
	}
	return "internal"
}
