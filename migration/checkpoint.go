package migration

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/shoal-dev/shoal/internal/tarsafe"
	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// SendCheckpoint streams the CRIU image directory dir (regular files and
// directories, no links) as a tar stream cut into parts; the last part
// carries the stream's size and sha256. It returns the bytes sent.
func SendCheckpoint(ctx context.Context, dir string, send func(*shoalv1.CheckpointPart) error) (int64, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(ctx, dir, pw)) }()
	defer pr.Close()
	h := sha256.New()
	var size int64
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(pr, buf)
		if n > 0 {
			h.Write(buf[:n])
			size += int64(n)
			data := make([]byte, n)
			copy(data, buf[:n])
			if serr := send(&shoalv1.CheckpointPart{Data: data}); serr != nil {
				return size, fmt.Errorf("send checkpoint: %w", serr)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return size, fmt.Errorf("send checkpoint: %w", err)
		}
	}
	end := &shoalv1.CheckpointPart{End: true, Size: size, Sha256: hex.EncodeToString(h.Sum(nil))}
	if err := send(end); err != nil {
		return size, fmt.Errorf("send checkpoint: %w", err)
	}
	return size, nil
}

// writeTar writes dir's tree as a tar stream.
func writeTar(ctx context.Context, dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: int64(fi.Mode().Perm())})
		case fi.Mode().IsRegular():
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: int64(fi.Mode().Perm()), Size: fi.Size()}); err != nil {
				return err
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		default:
			return nil // sockets, links: CRIU writes none we need
		}
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// CheckpointReceiver unpacks a checkpoint stream into a directory.
type CheckpointReceiver struct {
	dir   string
	pw    *io.PipeWriter
	done  chan error
	sum   hash.Hash
	size  int64
	ended bool
}

// NewCheckpointReceiver starts unpacking into dir, which must not exist.
func NewCheckpointReceiver(dir string) (*CheckpointReceiver, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("receive checkpoint: %w", err)
	}
	pr, pw := io.Pipe()
	r := &CheckpointReceiver{dir: dir, pw: pw, done: make(chan error, 1), sum: sha256.New()}
	go func() {
		err := readTar(dir, pr)
		if err == nil {
			_, err = io.Copy(io.Discard, pr) // tar padding past the end marker
		}
		pr.CloseWithError(err)
		r.done <- err
	}()
	return r, nil
}

// Apply consumes one part; the last one is checked against the size and
// sha256 it announces (ErrCorrupt when they differ).
func (r *CheckpointReceiver) Apply(p *shoalv1.CheckpointPart) error {
	if r.ended {
		return fmt.Errorf("%w: checkpoint part after the end", ErrCorrupt)
	}
	if len(p.GetData()) > 0 {
		r.sum.Write(p.GetData())
		r.size += int64(len(p.GetData()))
		if _, err := r.pw.Write(p.GetData()); err != nil {
			return fmt.Errorf("receive checkpoint: %w", err)
		}
	}
	if !p.GetEnd() {
		return nil
	}
	r.ended = true
	got := hex.EncodeToString(r.sum.Sum(nil))
	if r.size != p.GetSize() || got != p.GetSha256() {
		r.pw.CloseWithError(ErrCorrupt)
		<-r.done
		return fmt.Errorf("%w: checkpoint: %d bytes sha256 %.12s, sender sent %d bytes sha256 %.12s",
			ErrCorrupt, r.size, got, p.GetSize(), p.GetSha256())
	}
	r.pw.Close()
	if err := <-r.done; err != nil {
		return fmt.Errorf("receive checkpoint: %w", err)
	}
	return nil
}

// Complete reports whether the whole stream arrived and was verified.
func (r *CheckpointReceiver) Complete() bool { return r.ended }

// Bytes returns the stream bytes received.
func (r *CheckpointReceiver) Bytes() int64 { return r.size }

// Abort stops unpacking and removes the directory.
func (r *CheckpointReceiver) Abort() {
	if !r.ended {
		r.pw.CloseWithError(errors.New("transfer aborted"))
		<-r.done
		r.ended = true
	}
	_ = os.RemoveAll(r.dir)
}

// readTar unpacks a stream written by writeTar into dir, refusing paths
// that leave it.
func readTar(dir string, rd io.Reader) error {
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// The transport checks integrity: an unreadable archive is
			// corrupt at the sender.
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("%w: path %q leaves the checkpoint", ErrCorrupt, h.Name)
		}
		if tarsafe.Sparse(h) {
			return fmt.Errorf("%w: sparse entry %q (its data would expand to %d bytes)", ErrCorrupt, h.Name, h.Size)
		}
		p := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: unexpected entry %q of type %c", ErrCorrupt, h.Name, h.Typeflag)
		}
	}
}
