package xrpc

import "testing"

// TestEveryRouteHasAnOAuthRule: a method that authenticates callers must
// say what an OAuth token needs to call it (or refuse OAuth), except the
// operator's methods, which the admin check refuses anyway.
func TestEveryRouteHasAnOAuthRule(t *testing.T) {
	s := New(Deps{})
	for nsid, rt := range s.routes {
		if rt.auth == authNone || rt.auth == authAdmin || rt.auth == authRefresh {
			continue
		}
		if _, ok := oauthRules[nsid]; !ok {
			t.Errorf("%s authenticates callers but has no OAuth rule in oauthRules", nsid)
		}
	}
}
