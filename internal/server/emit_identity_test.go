package server_test

import (
	"net/http"
	"testing"

	"stratus/internal/pdstest"
)

// Ensure the operator's emitIdentity appends one #identity event, and that
// session tokens may not call it.
func TestEmitIdentity(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t)
	before := s.LastSeq(t)
	var out struct {
		Seq int64 `json:"seq"`
	}
	s.Call(t, http.MethodPost, "app.stratus.admin.emitIdentity", nil, map[string]any{}, s.AdminToken(), &out)
	if out.Seq != before+1 {
		t.Fatalf("seq = %d, want %d", out.Seq, before+1)
	}
	evs := s.Events(t, before)
	if len(evs) != 1 || evs[0].Type != "identity" {
		t.Fatalf("events after %d: %+v", before, evs)
	}
	sess := s.Login(t, s.Handle(), pdstest.Password)
	status, body := s.Do(t, http.MethodPost, "app.stratus.admin.emitIdentity", nil, map[string]any{}, sess.AccessJWT)
	pdstest.MustError(t, status, body, http.StatusForbidden, "Forbidden")
}
