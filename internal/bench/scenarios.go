package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PostCollection is the collection the write scenarios fill.
const PostCollection = "app.bsky.feed.post"

// BlobCollection holds the records that reference the uploaded blobs:
// servers keep an uploaded blob only once a record references it, and
// only serve it then.
const BlobCollection = "app.stratus.bench.blob"

// post returns a new post record: the record appendPost writes, as a
// map for encoding/json.
func post(scenario string, i int) map[string]any {
	return map[string]any{
		"$type":     PostCollection,
		"text":      postText(scenario, i),
		"createdAt": time.Now().UTC().Format(createdAtLayout),
	}
}

// writeAnswer is createRecord's answer.
type writeAnswer struct {
	URI string `json:"uri"`
	CID string `json:"cid"`
}

// recordAnswer is what the tool reads of getRecord's answer.
type recordAnswer struct {
	URI   string          `json:"uri"`
	Value json.RawMessage `json:"value"`
}

func rkeyOf(uri string) string { return uri[strings.LastIndexByte(uri, '/')+1:] }

// create writes one post and returns its answer.
func (r *run) create(ctx context.Context, scenario string, i int) (writeAnswer, error) {
	var out writeAnswer
	err := r.c.post(ctx, "com.atproto.repo.createRecord", json.RawMessage(createPostBody(r.did, scenario, i, time.Now())), &out)
	if err == nil && (out.URI == "" || out.CID == "") {
		err = &RequestError{Method: "com.atproto.repo.createRecord", Status: http.StatusOK, Msg: "answer without uri or cid"}
	}
	return out, err
}

// sequentialCreates writes n posts one after another within the time
// bound; onSent (if set) learns each write's send time and record CID.
func (r *run) sequentialCreates(ctx context.Context, scenario string, n int, onSent func(cid string, sent time.Time)) (*tally, time.Duration) {
	t := &tally{}
	if r.opts.SubscriberProcess != nil {
		// One request at a time needs one thread; see
		// Options.SubscriberProcess.
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	}
	deadline := time.Now().Add(r.opts.MaxTime)
	start := time.Now()
	keys := make([]string, 0, n)
	for i := 0; i < n && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		sent := time.Now()
		out, err := r.create(ctx, scenario, i)
		t.add(time.Since(sent), err)
		if err == nil {
			keys = append(keys, rkeyOf(out.URI))
			if onSent != nil {
				onSent(out.CID, sent)
			}
		}
	}
	elapsed := time.Since(start)
	r.addKeys(keys...)
	return t, elapsed
}

// 1: sequential createRecord.
func (r *run) createSeq(ctx context.Context) []Result {
	t, elapsed := r.sequentialCreates(ctx, CreateSeq, r.opts.Records, nil)
	res := t.result("createRecord, sequential", "/s", elapsed, 1)
	res.Notes = stoppedEarly(res.Count+res.Errors, r.opts.Records, r.opts.MaxTime)
	r.seqPS = res.PerSecond
	return []Result{res}
}

// 2: W concurrent writers, N createRecord calls each.
func (r *run) createConcurrent(ctx context.Context) []Result {
	t := &tally{}
	deadline := time.Now().Add(r.opts.MaxTime)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range r.opts.Writers {
		wg.Go(func() {
			var keys []string
			for i := 0; i < r.opts.PerWriter && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				sent := time.Now()
				out, err := r.create(ctx, CreateConcurrent, w*r.opts.PerWriter+i)
				t.add(time.Since(sent), err)
				if err == nil {
					keys = append(keys, rkeyOf(out.URI))
				}
			}
			r.addKeys(keys...)
		})
	}
	wg.Wait()
	res := t.result("createRecord, "+plural(r.opts.Writers, "writer"), "/s", time.Since(start), 1)
	res.Notes = stoppedEarly(res.Count+res.Errors, r.opts.Writers*r.opts.PerWriter, r.opts.MaxTime)
	if r.seqPS > 0 && res.PerSecond > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%.2f× the sequential rate", res.PerSecond/r.seqPS))
	}
	return []Result{res}
}

// 7: applyWrites batches of creates.
func (r *run) applyWrites(ctx context.Context) []Result {
	t := &tally{}
	deadline := time.Now().Add(r.opts.MaxTime)
	start := time.Now()
	for b := 0; b < r.opts.Batches && time.Now().Before(deadline) && ctx.Err() == nil; b++ {
		var out struct {
			Results []struct {
				URI string `json:"uri"`
			} `json:"results"`
		}
		sent := time.Now()
		err := r.c.post(ctx, "com.atproto.repo.applyWrites", json.RawMessage(applyWritesBody(r.did, ApplyWrites, b*r.opts.BatchSize, r.opts.BatchSize, time.Now())), &out)
		d := time.Since(sent)
		if err == nil && len(out.Results) != r.opts.BatchSize {
			err = &RequestError{Method: "com.atproto.repo.applyWrites", Status: http.StatusOK,
				Msg: fmt.Sprintf("%d results for %d writes", len(out.Results), r.opts.BatchSize)}
		}
		t.add(d, err)
		if err == nil {
			keys := make([]string, 0, len(out.Results))
			for _, res := range out.Results {
				keys = append(keys, rkeyOf(res.URI))
			}
			r.addKeys(keys...)
		}
	}
	res := t.result("applyWrites, "+plural(r.opts.BatchSize, "create")+" per call", "records/s", time.Since(start), float64(r.opts.BatchSize))
	res.Notes = stoppedEarly(res.Count+res.Errors, r.opts.Batches, r.opts.MaxTime)
	return []Result{res}
}

// 3: R readers calling getRecord over the records written for T.
func (r *run) getRecord(ctx context.Context) []Result {
	r.mu.Lock()
	keys := append([]string(nil), r.rkeys...)
	r.mu.Unlock()
	title := "getRecord, " + plural(r.opts.Readers, "reader")
	if len(keys) == 0 {
		return []Result{{Title: title, Errors: 1, FirstError: "no records were written to read (were the write scenarios skipped?)"}}
	}
	t := &tally{}
	bound := min(r.opts.ReadTime, r.opts.MaxTime)
	deadline := time.Now().Add(bound)
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range r.opts.Readers {
		wg.Go(func() {
			// Readers walk the keys with a stride, so neighbouring calls
			// do not read neighbouring records.
			for time.Now().Before(deadline) && ctx.Err() == nil {
				n := next.Add(1)
				if n > int64(r.opts.MaxReads) {
					return
				}
				k := keys[(n*7919)%int64(len(keys))]
				q := url.Values{"repo": {r.did}, "collection": {PostCollection}, "rkey": {k}}
				var out recordAnswer
				sent := time.Now()
				err := r.c.get(ctx, "com.atproto.repo.getRecord", q, &out)
				d := time.Since(sent)
				if err == nil && (len(out.Value) == 0 || rkeyOf(out.URI) != k) {
					err = &RequestError{Method: "com.atproto.repo.getRecord", Status: http.StatusOK, Msg: "answer is not the record asked for"}
				}
				t.add(d, err)
			}
		})
	}
	wg.Wait()
	res := t.result(title, "/s", time.Since(start), 1)
	res.Notes = []string{fmt.Sprintf("%d records to read from, for %s or %d reads", len(keys), bound, r.opts.MaxReads)}
	return []Result{res}
}

// 4: full getRepo exports, the first one verified.
func (r *run) export(ctx context.Context) []Result {
	t := &tally{}
	deadline := time.Now().Add(r.opts.MaxTime)
	var size int64
	var records int
	var notes []string
	var busy time.Duration // time in requests, without the verification
	for i := 0; i < r.opts.ExportRuns && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		sent := time.Now()
		ans, err := r.c.do(ctx, http.MethodGet, "com.atproto.sync.getRepo", url.Values{"did": {r.did}}, "", nil, maxRepoAnswer)
		d := time.Since(sent)
		busy += d
		if err == nil && i == 0 {
			size = int64(ans.Len())
			// Verification is not part of the measured time.
			chk, verr := verifyExport(ctx, ans.Bytes(), r.did, r.key)
			if verr != nil {
				err = &RequestError{Method: "com.atproto.sync.getRepo", Status: http.StatusOK, Msg: "export does not verify: " + verr.Error()}
			} else {
				records = chk.Records
				sig := "signature verified against the DID document's key"
				if !chk.Signature {
					sig = "signature not checked (no key)"
				}
				notes = append(notes, fmt.Sprintf("%d bytes, %d records, %d blocks, rev %s; every block hashes to its CID, MST complete and canonical (rebuilt root matches the commit), %s",
					size, chk.Records, chk.Blocks, chk.Rev, sig))
			}
		}
		if ans != nil {
			release(ans)
		}
		t.add(d, err)
	}
	res := t.result("getRepo, full export", "MB/s", busy, float64(size)/1e6)
	res.Bytes, res.Records = size, records
	res.Notes = append(notes, stoppedEarly(res.Count+res.Errors, r.opts.ExportRuns, r.opts.MaxTime)...)
	return []Result{res}
}

// 6: blob upload, then download of each, B bytes each.
func (r *run) blob(ctx context.Context) []Result {
	up, down := &tally{}, &tally{}
	deadline := time.Now().Add(r.opts.MaxTime)
	rng := rand.New(rand.NewChaCha8([32]byte{byte(time.Now().UnixNano())}))
	var upTime, downTime time.Duration
	n := 0
	for i := 0; i < r.opts.Blobs && time.Now().Before(deadline) && ctx.Err() == nil; i++ {
		n++
		data := make([]byte, r.opts.BlobSize)
		for j := 0; j+8 <= len(data); j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				data[j+k] = byte(v >> (8 * k))
			}
		}
		sent := time.Now()
		ans, err := r.c.do(ctx, http.MethodPost, "com.atproto.repo.uploadBlob", nil, bytesType, data, maxJSONAnswer)
		d := time.Since(sent)
		var out struct {
			Blob json.RawMessage `json:"blob"`
		}
		var ref struct {
			Ref struct {
				Link string `json:"$link"`
			} `json:"ref"`
			Size int `json:"size"`
		}
		if err == nil {
			if json.Unmarshal(ans.Bytes(), &out) != nil || json.Unmarshal(out.Blob, &ref) != nil || ref.Ref.Link == "" {
				err = &RequestError{Method: "com.atproto.repo.uploadBlob", Status: http.StatusOK, Msg: "answer has no blob reference: " + truncate(ans.String(), 200)}
			} else if ref.Size != len(data) {
				err = &RequestError{Method: "com.atproto.repo.uploadBlob", Status: http.StatusOK, Msg: fmt.Sprintf("blob size %d, sent %d", ref.Size, len(data))}
			}
			release(ans)
		}
		up.add(d, err)
		upTime += d
		if err != nil {
			continue
		}
		// Referencing the blob makes it permanent (not part of the timing).
		if err := r.c.post(ctx, "com.atproto.repo.createRecord", map[string]any{
			"repo": r.did, "collection": BlobCollection,
			"record": map[string]any{"$type": BlobCollection, "blob": out.Blob, "createdAt": time.Now().UTC().Format(createdAtLayout)},
		}, nil); err != nil {
			down.add(0, fmt.Errorf("reference the blob in a record: %w", err))
			continue
		}
		sent = time.Now()
		got, err := r.c.do(ctx, http.MethodGet, "com.atproto.sync.getBlob", url.Values{"did": {r.did}, "cid": {ref.Ref.Link}}, "", nil, maxBlobAnswer)
		d = time.Since(sent)
		if err == nil {
			if !bytes.Equal(got.Bytes(), data) {
				err = &RequestError{Method: "com.atproto.sync.getBlob", Status: http.StatusOK, Msg: fmt.Sprintf("got %d bytes that differ from the %d uploaded", got.Len(), len(data))}
			}
			release(got)
		}
		down.add(d, err)
		downTime += d
	}
	// Rates are over the time spent in each call, since uploads and
	// downloads alternate.
	mbEach := float64(r.opts.BlobSize) / 1e6
	u := up.result(fmt.Sprintf("uploadBlob, %s each", size(r.opts.BlobSize)), "MB/s", upTime, mbEach)
	g := down.result(fmt.Sprintf("getBlob, %s each", size(r.opts.BlobSize)), "MB/s", downTime, mbEach)
	u.Bytes, g.Bytes = int64(up.ok*r.opts.BlobSize), int64(down.ok*r.opts.BlobSize)
	u.Notes = stoppedEarly(n, r.opts.Blobs, r.opts.MaxTime)
	g.Notes = []string{"every download compared byte for byte with the upload"}
	return []Result{u, g}
}

func size(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// plural writes "1 reader", "8 readers".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
