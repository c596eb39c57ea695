package xrpc

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/pdserr"
)

// requestHost is the Host header without a port, lower-cased.
func requestHost(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(h)
}

// handleHealth serves /xrpc/_health.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.deps.Ping != nil {
		if err := s.deps.Ping(r.Context()); err != nil {
			s.log.ErrorContext(r.Context(), "health check failed", "err", err)
			writeError(w, r, s.log, pdserr.New(pdserr.ServiceUnavailable, "database unavailable"))
			return
		}
	}
	writeJSON(w, struct {
		Version string `json:"version"`
	}{s.deps.Version})
}

// handleDIDDocument serves /.well-known/did.json for a did:web account
// whose DID names this host.
func (s *Server) handleDIDDocument(w http.ResponseWriter, r *http.Request) {
	a, err := s.deps.Accounts.Get(r.Context(), s.deps.PrimaryDID)
	if err != nil || a.DID.Method() != "web" {
		writeError(w, r, s.log, pdserr.New(pdserr.NotFound, "no did:web document is hosted here"))
		return
	}
	doc, err := s.didDocument(r.Context(), a)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	w.Header().Set("Content-Type", "application/did+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	json.NewEncoder(w).Encode(doc)
}

// handleAtprotoDID serves /.well-known/atproto-did, the HTTPS method of
// handle resolution: the DID of the account whose handle is the requested
// host, or of the primary account on the server's own hostname.
func (s *Server) handleAtprotoDID(w http.ResponseWriter, r *http.Request) {
	var did syntax.DID
	if h, err := syntax.ParseHandle(requestHost(r)); err == nil {
		if a, err := s.deps.Accounts.ByHandle(r.Context(), h); err == nil {
			did = a.DID
		}
	}
	if did == "" && (requestHost(r) == strings.ToLower(s.deps.Hostname) || requestHost(r) == "localhost" || net.ParseIP(requestHost(r)) != nil) {
		did = s.deps.PrimaryDID
	}
	if did == "" {
		http.Error(w, "no account for this handle", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, did.String())
}

// handleRobots serves /robots.txt: the public API may be crawled.
func (s *Server) handleRobots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "# This is an AT Protocol Personal Data Server.\n\n# Crawling the public API is allowed.\nUser-agent: *\nAllow: /\n")
}

// handleHome serves a plain-text banner at /.
func (s *Server) handleHome(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Stratus %s: an AT Protocol Personal Data Server.\n\nMost API routes are under /xrpc/\n", s.deps.Version)
}
