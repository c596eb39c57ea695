// Package plctest provides an in-process stand-in PLC directory for tests.
//
// The stand-in accepts only genesis operations and serves the DID document,
// the current data and the last operation of every DID registered with it.
package plctest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/identity"
)

// maxOpBytes caps the size of a submitted operation.
const maxOpBytes = 64 << 10

// Server is a stand-in PLC directory backed by an httptest.Server. It is safe
// for concurrent use.
type Server struct {
	srv *httptest.Server

	mu      sync.RWMutex
	ops     map[syntax.DID]identity.Operation
	updates int
}

// NewServer starts a stand-in PLC directory on a loopback port chosen by the
// system and closes it when tb's test ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{ops: make(map[syntax.DID]identity.Operation)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{did}", s.handleSubmit)
	mux.HandleFunc("GET /{did}", s.handleDocument)
	mux.HandleFunc("GET /{did}/data", s.handleData)
	mux.HandleFunc("GET /{did}/log/last", s.handleLastOp)
	s.srv = httptest.NewServer(mux)
	tb.Cleanup(s.srv.Close)
	return s
}

// URL returns the directory base URL, without a trailing slash.
func (s *Server) URL() string {
	return s.srv.URL
}

// Operation returns a copy of the operation stored for did, if any.
func (s *Server) Operation(did syntax.DID) (*identity.Operation, bool) {
	s.mu.RLock()
	op, ok := s.ops[did]
	s.mu.RUnlock()
	if !ok {
		return nil, false
	}
	cp := cloneOp(op)
	return &cp, true
}

// Len returns the number of registered DIDs.
func (s *Server) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.ops)
}

// handleSubmit implements POST /{did}: it accepts a valid genesis
// operation whose derived DID equals the path DID, or, for a registered
// DID, an update whose prev is the latest operation and which one of that
// operation's rotation keys signed.
func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	did, err := syntax.ParseDID(r.PathValue("did"))
	if err != nil || did.Method() != "plc" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid DID: %s", r.PathValue("did")))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOpBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "Operation too large")
			return
		}
		writeError(w, http.StatusBadRequest, "Could not read operation")
		return
	}
	var op identity.Operation
	if err := json.Unmarshal(body, &op); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid operation: "+err.Error())
		return
	}
	if op.Prev != nil {
		s.handleUpdate(w, did, op)
		return
	}
	derived, err := op.VerifyGenesis()
	if err != nil {
		writeError(w, http.StatusBadRequest, "Invalid operation: "+err.Error())
		return
	}
	if derived != did {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Hash of genesis operation does not match DID identifier: %s", did))
		return
	}
	if _, err := op.Document(did); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid operation: "+err.Error())
		return
	}

	s.mu.Lock()
	_, exists := s.ops[did]
	if !exists {
		s.ops[did] = cloneOp(op)
	}
	s.mu.Unlock()
	if exists {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("DID already registered: %s", did))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// handleDocument implements GET /{did}: the DID document.
func (s *Server) handleDocument(w http.ResponseWriter, r *http.Request) {
	did, op, ok := s.lookup(w, r)
	if !ok {
		return
	}
	doc, err := op.Document(did)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, "application/did+ld+json", doc)
}

// opData is the body of GET /{did}/data.
type opData struct {
	DID                 syntax.DID                    `json:"did"`
	VerificationMethods map[string]string             `json:"verificationMethods"`
	RotationKeys        []string                      `json:"rotationKeys"`
	AlsoKnownAs         []string                      `json:"alsoKnownAs"`
	Services            map[string]identity.OpService `json:"services"`
}

// handleData implements GET /{did}/data: the current operation data.
func (s *Server) handleData(w http.ResponseWriter, r *http.Request) {
	did, op, ok := s.lookup(w, r)
	if !ok {
		return
	}
	writeJSON(w, "application/json", opData{
		DID:                 did,
		VerificationMethods: op.VerificationMethods,
		RotationKeys:        op.RotationKeys,
		AlsoKnownAs:         op.AlsoKnownAs,
		Services:            op.Services,
	})
}

// handleLastOp implements GET /{did}/log/last: the latest signed operation.
func (s *Server) handleLastOp(w http.ResponseWriter, r *http.Request) {
	_, op, ok := s.lookup(w, r)
	if !ok {
		return
	}
	writeJSON(w, "application/json", op)
}

// lookup resolves the path DID to its stored operation, writing a 404 (or
// 400 for a malformed DID) and returning false when there is none.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (syntax.DID, identity.Operation, bool) {
	raw := r.PathValue("did")
	did, err := syntax.ParseDID(raw)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("Invalid DID: %s", raw))
		return "", identity.Operation{}, false
	}
	s.mu.RLock()
	op, ok := s.ops[did]
	s.mu.RUnlock()
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("DID not registered: %s", did))
		return "", identity.Operation{}, false
	}
	return did, cloneOp(op), true
}

// cloneOp deep-copies op so stored operations never share memory with callers.
func cloneOp(op identity.Operation) identity.Operation {
	cp := op
	cp.RotationKeys = append([]string{}, op.RotationKeys...)
	cp.AlsoKnownAs = append([]string{}, op.AlsoKnownAs...)
	cp.VerificationMethods = make(map[string]string, len(op.VerificationMethods))
	for k, v := range op.VerificationMethods {
		cp.VerificationMethods[k] = v
	}
	cp.Services = make(map[string]identity.OpService, len(op.Services))
	for k, v := range op.Services {
		cp.Services[k] = v
	}
	if op.Prev != nil {
		prev := *op.Prev
		cp.Prev = &prev
	}
	return cp
}

// writeJSON writes v as a 200 JSON answer with the given content type.
func writeJSON(w http.ResponseWriter, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// writeError writes a JSON {"message": msg} answer with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// handleUpdate applies an update operation to a registered DID.
func (s *Server) handleUpdate(w http.ResponseWriter, did syntax.DID, op identity.Operation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok := s.ops[did]
	if !ok {
		writeError(w, http.StatusBadRequest, "Invalid operation: not a genesis operation: prev is set, and the DID is not registered")
		return
	}
	if err := op.VerifyUpdate(&prev); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid operation: "+err.Error())
		return
	}
	if _, err := op.Document(did); err != nil {
		writeError(w, http.StatusBadRequest, "Invalid operation: "+err.Error())
		return
	}
	s.ops[did] = cloneOp(op)
	s.updates++
	w.WriteHeader(http.StatusOK)
}

// Updates returns how many update operations were accepted.
func (s *Server) Updates() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.updates
}

// Register stores a genesis operation directly, as if it had been
// submitted, and returns its DID.
func (s *Server) Register(op *identity.Operation) (syntax.DID, error) {
	did, err := op.VerifyGenesis()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.ops[did] = cloneOp(*op)
	s.mu.Unlock()
	return did, nil
}
