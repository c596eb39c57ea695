package server_test

import (
	"net/http"
	"testing"

	"stratus/internal/pdstest"
)

// Ensure only privileged app passwords (and full sessions) may reach
// chat.bsky.*: a plain app-password session is refused before the method
// is looked up, however the NSID is cased.
func TestChatNeedsPrivilegedAppPassword(t *testing.T) {
	t.Parallel()
	s, _, _ := proxied(t)
	var plain, privileged struct {
		Password string `json:"password"`
	}
	s.Call(t, http.MethodPost, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "plain"}, s.AdminToken(), &plain)
	s.Call(t, http.MethodPost, "com.atproto.server.createAppPassword", nil, map[string]any{"name": "dm", "privileged": true}, s.AdminToken(), &privileged)
	full := s.Login(t, s.Handle(), pdstest.Password)
	plainSess := s.Login(t, s.Handle(), plain.Password)
	privSess := s.Login(t, s.Handle(), privileged.Password)
	for _, nsid := range []string{"chat.bsky.convo.listConvos", "Chat.Bsky.convo.listConvos"} {
		status, body := s.Do(t, http.MethodGet, nsid, nil, nil, plainSess.AccessJWT)
		pdstest.MustError(t, status, body, http.StatusUnauthorized, "InvalidToken")
		for _, tok := range []string{full.AccessJWT, privSess.AccessJWT} {
			status, body = s.Do(t, http.MethodGet, nsid, nil, nil, tok)
			if status == http.StatusUnauthorized || status == http.StatusForbidden {
				t.Errorf("%s refused for an allowed session: %d %s", nsid, status, body)
			}
		}
	}
}
