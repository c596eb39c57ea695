package auth_test

import (
	"encoding/base64"
	"net/http/httptest"
	"strings"
	"testing"

	"stratus/internal/auth"
	"stratus/internal/pdserr"
)

func TestVerifier_Authenticate(t *testing.T) {
	const token = "s3cret-admin-token-0123456789"
	v := auth.NewVerifier(token, nil)
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	tests := []struct {
		name    string
		header  string
		wantErr string // XRPC error name, "" for success
	}{
		{"NoHeader", "", pdserr.AuthMissing},
		{"Bearer", "Bearer " + token, ""},
		{"BearerLowercaseScheme", "bearer " + token, ""},
		{"BearerWrong", "Bearer nope", pdserr.InvalidToken},
		{"BearerPrefix", "Bearer " + token[:10], pdserr.InvalidToken},
		{"BearerEmpty", "Bearer ", pdserr.InvalidToken},
		{"NoCredential", "Bearer", pdserr.AuthMissing},
		{"Basic", basic("admin", token), ""},
		{"BasicWrongUser", basic("root", token), pdserr.InvalidToken},
		{"BasicWrongPassword", basic("admin", "x"), pdserr.InvalidToken},
		{"BasicGarbage", "Basic %%%", pdserr.InvalidToken},
		{"OtherScheme", "Digest abc", pdserr.AuthMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			p, err := v.Authenticate(r)
			if tt.wantErr == "" {
				if err != nil || p == nil || p.Kind != auth.Admin {
					t.Fatalf("got %v, %v; want admin", p, err)
				}
				return
			}
			if !pdserr.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %s", err, tt.wantErr)
			}
		})
	}
}

func TestVerifier_EmptyTokenNeverMatches(t *testing.T) {
	v := auth.NewVerifier("", nil)
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer ")
	if p, err := v.Authenticate(r); err == nil {
		t.Fatalf("empty admin token authenticated %v", p)
	}
}

func TestPrincipal_ActsFor(t *testing.T) {
	admin := &auth.Principal{Kind: auth.Admin}
	user := &auth.Principal{Kind: auth.Access, DID: "did:plc:alice"}
	var none *auth.Principal
	if !admin.ActsFor("did:plc:anyone") || !user.ActsFor("did:plc:alice") || user.ActsFor("did:plc:bob") || none.ActsFor("did:plc:alice") {
		t.Fatal("ActsFor answers wrong")
	}
}

func TestPasswords(t *testing.T) {
	h, err := auth.HashPassword("correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$2") || !auth.CheckPassword(h, "correct horse battery") || auth.CheckPassword(h, "wrong") {
		t.Fatal("hash does not verify as expected")
	}
	for _, bad := range []string{"short", strings.Repeat("x", 73)} {
		if _, err := auth.HashPassword(bad); err == nil {
			t.Errorf("HashPassword(%d bytes) accepted", len(bad))
		}
	}
	pw := auth.GeneratePassword()
	if len(pw) != 19 || strings.Count(pw, "-") != 3 {
		t.Errorf("generated password %q not in xxxx-xxxx-xxxx-xxxx form", pw)
	}
	tok := auth.GenerateToken()
	if auth.GeneratePassword() == pw || auth.GenerateToken() == tok {
		t.Error("generated secrets repeat")
	}
}
