package xrpc

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"stratus/internal/oauth"
	"stratus/internal/pdserr"
	"stratus/internal/proxy"
	"stratus/internal/serviceauth"
)

// statusOf maps XRPC error names to HTTP statuses: the one table where a
// domain failure becomes a status code. Names not listed are 400, as the
// reference PDS answers any named InvalidRequestError. RepoNotFound is 404,
// which clients and the Bluesky app treat as "no such repository" on every
// endpoint, including blob and sync reads.
var statusOf = map[string]int{
	pdserr.InvalidRequest:       http.StatusBadRequest,
	pdserr.AuthMissing:          http.StatusUnauthorized,
	pdserr.AuthRequired:         http.StatusUnauthorized,
	pdserr.InvalidToken:         http.StatusUnauthorized,
	pdserr.ExpiredToken:         http.StatusBadRequest,
	pdserr.Forbidden:            http.StatusForbidden,
	pdserr.RecordNotFound:       http.StatusBadRequest,
	pdserr.RecordAlreadyExists:  http.StatusConflict,
	pdserr.RepoNotFound:         http.StatusNotFound,
	pdserr.RepoDeactivated:      http.StatusBadRequest,
	pdserr.RepoTakendown:        http.StatusBadRequest,
	pdserr.AccountDeactivated:   http.StatusForbidden,
	pdserr.InvalidSwap:          http.StatusBadRequest,
	pdserr.InvalidRecord:        http.StatusBadRequest,
	pdserr.InvalidRepo:          http.StatusBadRequest,
	pdserr.BlockNotFound:        http.StatusBadRequest,
	pdserr.HandleNotFound:       http.StatusBadRequest,
	pdserr.PayloadTooLarge:      http.StatusRequestEntityTooLarge,
	pdserr.MethodNotImplemented: http.StatusNotImplemented,
	pdserr.MethodNotAllowed:     http.StatusMethodNotAllowed,
	pdserr.NotFound:             http.StatusNotFound,
	pdserr.InternalServerError:  http.StatusInternalServerError,
	pdserr.RateLimitExceeded:    http.StatusTooManyRequests,
	pdserr.UnsupportedMediaType: http.StatusUnsupportedMediaType,
	pdserr.ServiceUnavailable:   http.StatusServiceUnavailable,
	pdserr.InvalidCursor:        http.StatusBadRequest,
	pdserr.AccountTakedown:      http.StatusUnauthorized,

	// Forwarding to other services, and their service tokens.
	pdserr.UpstreamFailure:          http.StatusBadGateway,
	pdserr.UpstreamTimeout:          http.StatusGatewayTimeout,
	serviceauth.BadJwt:              http.StatusUnauthorized,
	serviceauth.BadJwtType:          http.StatusUnauthorized,
	serviceauth.JwtExpired:          http.StatusUnauthorized,
	serviceauth.BadJwtAudience:      http.StatusUnauthorized,
	serviceauth.BadJwtLexiconMethod: http.StatusUnauthorized,
	serviceauth.BadJwtIss:           http.StatusUnauthorized,
	serviceauth.BadJwtSignature:     http.StatusUnauthorized,
	serviceauth.JwtReplayed:         http.StatusUnauthorized,
	InsufficientScope:               http.StatusForbidden,
	oauth.UseDPoPNonce:              http.StatusUnauthorized,
}

// methodStatus overrides statusOf for one method: a missing blob is 404 to
// getBlob, which reads it, but 400 to a record write that references it,
// as in the reference PDS.
var methodStatus = map[string]map[string]int{
	"com.atproto.sync.getBlob": {pdserr.BlobNotFound: http.StatusNotFound},
}

// StatusOf returns the HTTP status for an XRPC error name.
func StatusOf(name string) int {
	if s, ok := statusOf[name]; ok {
		return s
	}
	return http.StatusBadRequest
}

// errorBody is the XRPC error envelope.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message,omitempty"`
}

// writeError sends err as an XRPC error. Named errors keep their message;
// anything else is logged and reported as a generic internal error, so
// internals never leak to clients.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	if errors.Is(err, errClientGone) {
		return
	}
	var upstream *proxy.Error
	if errors.As(err, &upstream) {
		writeUpstreamError(w, upstream)
		return
	}
	pe, ok := pdserr.As(err)
	if !ok {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		pe = pdserr.New(pdserr.InternalServerError, "Internal Server Error")
	} else if pe.Name == pdserr.InternalServerError && pe.Err != nil {
		// A named server failure (a damaged repository) tells the client
		// what happened; the operator needs the cause.
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	status := StatusOf(pe.Name)
	setErrorHeaders(w, err)
	if st, ok := methodStatus[r.PathValue("nsid")][pe.Name]; ok {
		status = st
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{Error: pe.Name, Message: pe.Message})
}

// errClientGone marks a response that failed because the client went away;
// nothing can be sent and nothing is worth logging.
var errClientGone = errors.New("client gone")
