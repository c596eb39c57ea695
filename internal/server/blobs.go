package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"stratus/internal/blob"
	"stratus/internal/config"
	"stratus/internal/sqlite"
)

// OpenBlobStore opens the configured blob store: a directory in the data
// directory, or an S3-compatible bucket. The operator commands (check,
// backup, restore) use it to reach the server's blobs.
func OpenBlobStore(cfg *config.Config) (blob.Store, error) {
	switch cfg.BlobStore {
	case "", "disk":
		d, err := blob.NewDisk(filepath.Join(cfg.DataDir, config.BlobsDir))
		if err != nil {
			return nil, err
		}
		return d, nil
	case "s3":
		s, err := blob.NewS3(blob.S3Config{
			Endpoint:        cfg.BlobS3Endpoint,
			Bucket:          cfg.BlobS3Bucket,
			Region:          cfg.BlobS3Region,
			AccessKeyID:     cfg.BlobS3AccessKey,
			SecretAccessKey: cfg.BlobS3SecretKey,
			PathStyle:       cfg.BlobS3PathStyle,
		})
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("unknown blob store %q", cfg.BlobStore)
}

// openBlobs builds the blob service with the configured store.
func openBlobs(cfg *config.Config, db *sqlite.DB, log *slog.Logger) (*blob.Service, error) {
	dir := filepath.Join(cfg.DataDir, config.BlobsDir)
	store, err := OpenBlobStore(cfg)
	if err != nil {
		return nil, err
	}
	return blob.NewService(blob.Config{
		Store:   store,
		Index:   db.Blobs(),
		TempDir: filepath.Join(dir, ".tmp"),
		MaxSize: cfg.BlobMaxSize,
		TTL:     cfg.BlobTTLDuration(),
		Log:     log,
	})
}

// collectBlobs runs one blob collection and logs what it removed.
func (s *Server) collectBlobs(ctx context.Context) {
	got, err := s.blobs.Collect(ctx, time.Now())
	if err != nil && ctx.Err() == nil {
		s.log.Warn("collect blobs", "err", err)
	}
	if got.Blobs+got.Orphans+got.TempFiles > 0 {
		s.log.Info("collected blobs", "unreferenced", got.Blobs, "orphans", got.Orphans, "temp_files", got.TempFiles)
	}
}

// Blobs returns the blob service.
func (s *Server) Blobs() *blob.Service { return s.blobs }
