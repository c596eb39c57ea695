package xrpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"stratus/internal/pdserr"
)

func TestWriteError(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	tests := []struct {
		name        string
		err         error
		wantStatus  int
		wantName    string
		wantMessage string
	}{
		{"InvalidRequest", pdserr.New(pdserr.InvalidRequest, "bad"), 400, "InvalidRequest", "bad"},
		{"RecordNotFound", pdserr.New(pdserr.RecordNotFound, "Could not locate record: at://x"), 400, "RecordNotFound", "Could not locate record: at://x"},
		{"Conflict", pdserr.New(pdserr.RecordAlreadyExists, "dup"), 409, "RecordAlreadyExists", "dup"},
		{"AuthMissing", pdserr.New(pdserr.AuthMissing, "m"), 401, "AuthMissing", "m"},
		{"InvalidToken", pdserr.New(pdserr.InvalidToken, "m"), 401, "InvalidToken", "m"},
		{"ExpiredToken", pdserr.New(pdserr.ExpiredToken, "m"), 400, "ExpiredToken", "m"},
		{"Deactivated", pdserr.New(pdserr.AccountDeactivated, "m"), 403, "AccountDeactivated", "m"},
		{"RepoNotFound", pdserr.New(pdserr.RepoNotFound, "m"), 404, "RepoNotFound", "m"},
		{"TooLarge", pdserr.New(pdserr.PayloadTooLarge, "m"), 413, "PayloadTooLarge", "m"},
		{"NotImplemented", pdserr.New(pdserr.MethodNotImplemented, "m"), 501, "MethodNotImplemented", "m"},
		{"RateLimit", pdserr.New(pdserr.RateLimitExceeded, "m"), 429, "RateLimitExceeded", "m"},
		{"UnlistedName", pdserr.New("SomethingNew", "m"), 400, "SomethingNew", "m"},
		{"Wrapped", fmt.Errorf("ctx: %w", pdserr.New(pdserr.InvalidSwap, "swap")), 400, "InvalidSwap", "swap"},
		{"CauseHidden", pdserr.Wrap(errors.New("secret detail"), pdserr.InvalidRecord, "bad record"), 400, "InvalidRecord", "bad record"},
		{"Internal", errors.New("disk on fire at /var/lib"), 500, "InternalServerError", "Internal Server Error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeError(w, httptest.NewRequest("GET", "/xrpc/x.y.z", nil), log, tt.err)
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			var body map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body.String(), err)
			}
			if body["error"] != tt.wantName || body["message"] != tt.wantMessage {
				t.Errorf("body = %v, want %s / %s", body, tt.wantName, tt.wantMessage)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

func TestStatusOf_EveryNameHasAStatus(t *testing.T) {
	for name, status := range statusOf {
		if status < 400 || status > 599 || http.StatusText(status) == "" {
			t.Errorf("%s maps to %d", name, status)
		}
	}
}
