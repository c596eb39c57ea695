package idops

import (
	"context"
	"sync"
	"time"

	"github.com/bluesky-social/indigo/atproto/identity"
	"github.com/bluesky-social/indigo/atproto/syntax"

	"stratus/internal/safehttp"
)

// Resolver resolves handles with indigo (DNS TXT _atproto.<handle>, then
// https://<handle>/.well-known/atproto-did) over the SSRF-guarded client,
// remembering answers for a few minutes and failures for less.
type Resolver struct {
	dir *identity.BaseDirectory

	mu    sync.Mutex
	cache map[syntax.Handle]resolved
	now   func() time.Time
}

type resolved struct {
	did   syntax.DID
	err   error
	until time.Time
}

// Cache lifetimes and the bound on one resolution.
const (
	resolvedTTL = 5 * time.Minute
	failedTTL   = 30 * time.Second
	resolveTime = 5 * time.Second
	cacheMax    = 10000
)

// NewResolver returns a resolver whose HTTPS lookups use the outbound
// options (only tests allow plain HTTP or private addresses).
func NewResolver(opts safehttp.Options) *Resolver {
	opts.Timeout = resolveTime
	return &Resolver{
		dir:   &identity.BaseDirectory{HTTPClient: *safehttp.NewClient(opts), SkipHandleVerification: true},
		cache: map[syntax.Handle]resolved{},
		now:   time.Now,
	}
}

// ResolveHandle implements HandleResolver.
func (r *Resolver) ResolveHandle(ctx context.Context, h syntax.Handle) (syntax.DID, error) {
	h = h.Normalize()
	now := r.now()
	r.mu.Lock()
	if c, ok := r.cache[h]; ok && now.Before(c.until) {
		r.mu.Unlock()
		return c.did, c.err
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, resolveTime)
	defer cancel()
	did, err := r.dir.ResolveHandle(ctx, h)
	if ctx.Err() != nil && err != nil && context.Cause(ctx) == context.Canceled {
		return "", err // the caller went away: nothing learned
	}
	ttl := resolvedTTL
	if err != nil {
		ttl = failedTTL
	}
	r.mu.Lock()
	if len(r.cache) >= cacheMax {
		for k, c := range r.cache {
			if now.After(c.until) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= cacheMax {
			r.cache = map[syntax.Handle]resolved{}
		}
	}
	r.cache[h] = resolved{did: did, err: err, until: now.Add(ttl)}
	r.mu.Unlock()
	return did, err
}

// Forget drops a cached answer (after this server changes a handle).
func (r *Resolver) Forget(h syntax.Handle) {
	r.mu.Lock()
	delete(r.cache, h.Normalize())
	r.mu.Unlock()
}
