// Package metrics exposes a server's Prometheus metrics. Each server has
// its own registry (nothing is registered globally), served by Handler on
// a listener of its own that the server binds to loopback by default, never
// on the public port.
//
// Request metrics are labelled by XRPC method, but only for methods the
// server serves itself: forwarded methods share the label "_proxied" and
// everything else a handful of fixed labels, so a client inventing method
// names cannot grow the number of series.
package metrics

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Labels for requests that are not a locally served XRPC method.
const (
	LabelProxied = "_proxied" // a valid NSID forwarded to another service
	LabelInvalid = "_invalid" // /xrpc/ with something that is not an NSID
	LabelOther   = "_other"   // any path outside /xrpc/ and the known ones
)

// knownPaths are the non-XRPC endpoints that get a label of their own.
var knownPaths = map[string]bool{
	"/":                        true,
	"/robots.txt":              true,
	"/.well-known/did.json":    true,
	"/.well-known/atproto-did": true,
	"/.well-known/oauth-authorization-server": true,
	"/.well-known/oauth-protected-resource":   true,
	"/oauth/jwks":                             true,
	"/oauth/par":                              true,
	"/oauth/authorize":                        true,
	"/oauth/token":                            true,
	"/oauth/revoke":                           true,
	"/oauth/userinfo":                         true,
}

// Snapshot is the state read from storage at each scrape.
type Snapshot struct {
	LatestSeq int64
	// Events counts the firehose events sequenced since the server
	// started.
	Events      int64
	Subscribers int
	Blobs       int64
	BlobBytes   int64
	DBBytes     int64
	WALBytes    int64
}

// Config is what a Metrics needs from its server.
type Config struct {
	// Served reports whether an XRPC method is served locally (it then
	// gets its own label).
	Served func(nsid string) bool
	// Snapshot reads the current state at each scrape.
	Snapshot func(ctx context.Context) (Snapshot, error)
	Log      *slog.Logger
}

// Metrics holds one server's registry and instruments.
type Metrics struct {
	reg      *prometheus.Registry
	served   func(string) bool
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	commits  prometheus.Counter
	logins   *prometheus.CounterVec
}

// New creates a registry with the server's metrics and the Go runtime and
// process collectors.
func New(cfg Config) *Metrics {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Metrics{
		reg:    prometheus.NewRegistry(),
		served: cfg.Served,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pds_http_requests_total",
			Help: "HTTP requests answered, by XRPC method (or endpoint) and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pds_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by XRPC method (or endpoint); firehose connections count until they close.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"method"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pds_repo_commits_total",
			Help: "Repository commits made.",
		}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pds_login_failures_total",
			Help: "Failed or rate-limited sign-ins, by endpoint (createSession or oauth).",
		}, []string{"endpoint"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.commits, m.logins,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{snapshot: cfg.Snapshot, log: cfg.Log})
	// Both login counters exist from the start, so a dashboard shows 0
	// rather than no data.
	m.logins.WithLabelValues("createSession")
	m.logins.WithLabelValues("oauth")
	return m
}

// Registry returns the server's registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Commit counts one repository commit.
func (m *Metrics) Commit() { m.commits.Inc() }

// Label returns the bounded method label of a request.
func (m *Metrics) Label(r *http.Request) string {
	p := r.URL.Path
	if nsid, ok := strings.CutPrefix(p, "/xrpc/"); ok {
		switch {
		case nsid == "_health" || (m.served != nil && m.served(nsid)):
			return nsid
		case isNSID(nsid):
			return LabelProxied
		default:
			return LabelInvalid
		}
	}
	if knownPaths[p] {
		return p
	}
	return LabelOther
}

// isNSID is a cheap shape check (dotted segments of letters, digits and
// hyphens); the label only needs to separate plausible methods from junk.
func isNSID(s string) bool {
	if len(s) > 317 || strings.Count(s, ".") < 2 {
		return false
	}
	for _, c := range s {
		if !(c == '.' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// Middleware counts and times every request next answers.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		label := m.Label(r)
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			code := rec.status
			switch {
			case rec.hijacked:
				code = http.StatusSwitchingProtocols
			case code == 0:
				code = http.StatusOK
			}
			m.requests.WithLabelValues(label, strconv.Itoa(code)).Inc()
			m.latency.WithLabelValues(label).Observe(time.Since(start).Seconds())
			if code == http.StatusUnauthorized || code == http.StatusTooManyRequests {
				switch {
				case label == "com.atproto.server.createSession":
					m.logins.WithLabelValues("createSession").Inc()
				case label == "/oauth/authorize" && r.Method == http.MethodPost:
					m.logins.WithLabelValues("oauth").Inc()
				}
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// recorder notes the status a handler answers with. It passes hijacking
// (firehose WebSockets), flushing and ReadFrom (blob downloads) through.
type recorder struct {
	http.ResponseWriter
	status   int
	hijacked bool
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *recorder) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return c, brw, err
}

// Unwrap gives http.ResponseController access to the wrapped writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// stateCollector reads storage and the firehose at scrape time, with one
// query for all of it.
type stateCollector struct {
	snapshot func(ctx context.Context) (Snapshot, error)
	log      *slog.Logger
}

var (
	descSeq         = prometheus.NewDesc("pds_firehose_seq", "Sequence number of the newest firehose event.", nil, nil)
	descEvents      = prometheus.NewDesc("pds_firehose_events_total", "Firehose events sequenced since the server started.", nil, nil)
	descSubscribers = prometheus.NewDesc("pds_firehose_subscribers", "Connected firehose subscribers.", nil, nil)
	descBlobs       = prometheus.NewDesc("pds_blobs", "Blobs held.", nil, nil)
	descBlobBytes   = prometheus.NewDesc("pds_blob_bytes", "Bytes of the blobs held.", nil, nil)
	descDBBytes     = prometheus.NewDesc("pds_database_bytes", "Size of the database file.", nil, nil)
	descWALBytes    = prometheus.NewDesc("pds_database_wal_bytes", "Size of the database's write-ahead log.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSeq, descEvents, descSubscribers, descBlobs, descBlobBytes, descDBBytes, descWALBytes} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if c.snapshot == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.snapshot(ctx)
	if err != nil {
		// A scrape without these series is the signal; the cause goes to
		// the log, since Prometheus shows no error text.
		if !errors.Is(err, context.Canceled) {
			c.log.Warn("metrics: read state", "err", err)
		}
		return
	}
	ch <- prometheus.MustNewConstMetric(descSeq, prometheus.GaugeValue, float64(s.LatestSeq))
	ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(s.Events))
	ch <- prometheus.MustNewConstMetric(descSubscribers, prometheus.GaugeValue, float64(s.Subscribers))
	ch <- prometheus.MustNewConstMetric(descBlobs, prometheus.GaugeValue, float64(s.Blobs))
	ch <- prometheus.MustNewConstMetric(descBlobBytes, prometheus.GaugeValue, float64(s.BlobBytes))
	ch <- prometheus.MustNewConstMetric(descDBBytes, prometheus.GaugeValue, float64(s.DBBytes))
	ch <- prometheus.MustNewConstMetric(descWALBytes, prometheus.GaugeValue, float64(s.WALBytes))
}
