package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// S3Config locates a bucket on an S3-compatible service.
type S3Config struct {
	// Endpoint is the service's base URL, e.g. https://s3.us-east-1.amazonaws.com,
	// https://<account>.r2.cloudflarestorage.com or http://127.0.0.1:9000
	// (MinIO). Empty uses AWS's endpoint for Region.
	Endpoint        string
	Bucket          string
	Region          string
	AccessKeyID     string
	SecretAccessKey string
	// PathStyle addresses the bucket as <endpoint>/<bucket>/<key> instead
	// of <bucket>.<host>/<key>; MinIO and most self-hosted services need
	// it.
	PathStyle bool
	// HTTPClient is the client used for requests; nil means a default one.
	HTTPClient *http.Client
}

// S3 is a Store in a bucket of an S3-compatible service, with objects named
// "<did>/<cid>" as the reference PDS names them.
type S3 struct {
	client *s3.Client
	bucket string
}

var _ Store = (*S3)(nil)

// NewS3 returns a store for the bucket cfg names. It does not contact the
// service.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3 blob store: bucket is required")
	}
	region := cfg.Region
	if region == "" {
		// R2 and MinIO ignore the region but the signature needs one.
		region = "auto"
	}
	opts := s3.Options{
		Region:       region,
		UsePathStyle: cfg.PathStyle,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		// Only send and check checksums where the API requires them:
		// several S3-compatible services reject the newer default ones.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	return &S3{client: s3.New(opts), bucket: cfg.Bucket}, nil
}

// Put implements Store. r is sent as the request body; a seekable r (a
// file) lets the client sign the payload and retry.
func (s *S3) Put(ctx context.Context, key Key, r io.Reader, size int64) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(key.String()),
		Body:          r,
		ContentLength: aws.Int64(size),
		ContentType:   aws.String("application/octet-stream"),
	})
	if err != nil {
		return fmt.Errorf("put blob %s: %w", key, err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key Key, offset, length int64) (io.ReadCloser, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key.String())}
	switch {
	case length == 0:
		return io.NopCloser(eofReader{}), nil
	case length > 0:
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+length-1, 10))
	case offset > 0:
		in.Range = aws.String("bytes=" + strconv.FormatInt(offset, 10) + "-")
	}
	out, err := s.client.GetObject(ctx, in)
	if isNotFound(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get blob %s: %w", key, err)
	}
	return out.Body, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key Key) (int64, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key.String())})
	if isNotFound(err) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", key, err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key Key) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key.String())})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("delete blob %s: %w", key, err)
	}
	return nil
}

// List implements Store.
func (s *S3) List(ctx context.Context, fn func(Key, int64) error) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list blobs: %w", err)
		}
		for _, o := range page.Contents {
			k, err := ParseKey(aws.ToString(o.Key))
			if err != nil {
				continue // not ours
			}
			if err := fn(k, aws.ToInt64(o.Size)); err != nil {
				return err
			}
		}
	}
	return nil
}

func isNotFound(err error) bool {
	if err == nil {
		return false
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) {
		return true
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		}
	}
	return false
}
