// Package pdserr defines the error type that domain packages return when a
// failure has a name in the AT Protocol lexicons (RecordNotFound, InvalidSwap,
// ...). The XRPC layer maps names to HTTP statuses in one table; every other
// error is treated as internal and never shown to clients.
package pdserr

import (
	"errors"
	"fmt"
)

// Names of XRPC errors used by the server. They are spelled exactly as the
// lexicons and the reference PDS spell them, because clients match on them.
const (
	InvalidRequest       = "InvalidRequest"
	AuthMissing          = "AuthMissing"
	AuthRequired         = "AuthenticationRequired"
	InvalidToken         = "InvalidToken"
	ExpiredToken         = "ExpiredToken"
	Forbidden            = "Forbidden"
	RecordNotFound       = "RecordNotFound"
	RecordAlreadyExists  = "RecordAlreadyExists"
	RepoNotFound         = "RepoNotFound"
	RepoDeactivated      = "RepoDeactivated"
	RepoTakendown        = "RepoTakendown"
	AccountDeactivated   = "AccountDeactivated"
	InvalidSwap          = "InvalidSwap"
	InvalidRecord        = "InvalidRecord"
	InvalidRepo          = "InvalidRepo"
	BlockNotFound        = "BlockNotFound"
	HandleNotFound       = "HandleNotFound"
	PayloadTooLarge      = "PayloadTooLarge"
	MethodNotImplemented = "MethodNotImplemented"
	MethodNotAllowed     = "MethodNotAllowed"
	NotFound             = "NotFound"
	InternalServerError  = "InternalServerError"
	RateLimitExceeded    = "RateLimitExceeded"
	UnsupportedMediaType = "UnsupportedMediaType"
	ServiceUnavailable   = "ServiceUnavailable"
	InvalidCursor        = "InvalidCursor"
	DuplicateName        = "DuplicateName"
	AccountTakedown      = "AccountTakedown"
	BlobTooLarge         = "BlobTooLarge"
	BlobNotFound         = "BlobNotFound"
	InvalidMimeType      = "InvalidMimeType"
	InvalidSize          = "InvalidSize"
	UpstreamFailure      = "UpstreamFailure"
	UpstreamTimeout      = "UpstreamTimeout"
	BadExpiration        = "BadExpiration"
	HandleNotAvailable   = "HandleNotAvailable"
	InvalidHandle        = "InvalidHandle"
)

// Error is a failure with an XRPC error name and a message that is safe to
// show to the client.
type Error struct {
	Name    string
	Message string
	// Err is an optional cause, kept for logs and errors.Is; it is never sent
	// to clients.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Name + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Name + ": " + e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with a formatted message.
func New(name, format string, args ...any) *Error {
	return &Error{Name: name, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with a message and a cause.
func Wrap(err error, name, message string) *Error {
	return &Error{Name: name, Message: message, Err: err}
}

// As returns the first *Error in err's chain, if any.
func As(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// Is reports whether err carries an Error with the given name.
func Is(err error, name string) bool {
	e, ok := As(err)
	return ok && e.Name == name
}
