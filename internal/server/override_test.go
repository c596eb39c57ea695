package server_test

import (
	"net/http"
	"strings"
	"testing"

	"stratus/internal/config"
	"stratus/internal/pdstest"
)

// Ensure a rotation warns when a flag or environment variable sets the
// secret, since that value would win again at the next start.
func TestRotation_WarnsAboutOverriddenSecret(t *testing.T) {
	t.Parallel()
	s := pdstest.NewServer(t, pdstest.WithConfig(func(c *config.Config) {
		c.Overridden = map[string]string{"jwt-secret": "environment variable PDS_JWT_SECRET"}
	}))
	var out struct {
		Warning string `json:"warning"`
	}
	s.Call(t, http.MethodPost, "app.stratus.admin.rotateJwtSecret", nil, map[string]any{}, s.AdminToken(), &out)
	if !strings.Contains(out.Warning, "PDS_JWT_SECRET") {
		t.Errorf("warning = %q, want it to name PDS_JWT_SECRET", out.Warning)
	}
	var tok struct {
		AdminToken string `json:"adminToken"`
		Warning    string `json:"warning"`
	}
	s.Call(t, http.MethodPost, "app.stratus.admin.rotateAdminToken", nil, map[string]any{}, s.AdminToken(), &tok)
	if tok.AdminToken == "" || tok.Warning != "" {
		t.Errorf("admin token rotation: %+v (no warning expected)", tok)
	}
}
