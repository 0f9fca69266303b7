package images

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Magic numbers of the compressions a tarball may use.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicBzip2 = []byte{'B', 'Z', 'h'}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// decompress sniffs r's compression (gzip, xz, zstd, bzip2 or none) and returns a
// reader of the plain tar stream, decompressed ahead in its own goroutine so
// that inflating overlaps with the caller's file creation. The caller closes
// the returned closer.
func decompress(r io.Reader) (io.Reader, io.Closer, error) {
	zr, closer, err := decompressor(r)
	if err != nil {
		return nil, nil, err
	}
	if _, plain := zr.(*bufio.Reader); plain {
		return zr, closer, nil
	}
	// The read-ahead goroutine owns zr from now on and closes it when it ends.
	ra := newReadAhead(zr, closer)
	return ra, closerFunc(func() error { ra.Close(); return nil }), nil
}

// decompressor picks the decompressor for r's magic number.
func decompressor(r io.Reader) (io.Reader, io.Closer, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(6)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return nil, nil, fmt.Errorf("read tarball: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip: %v", ErrInvalid, err)
		}
		return zr, zr, nil
	case bytes.HasPrefix(head, magicXz):
		zr, err := xz.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: xz: %v", ErrInvalid, err)
		}
		return zr, io.NopCloser(nil), nil
	case bytes.HasPrefix(head, magicBzip2):
		return bzip2.NewReader(br), io.NopCloser(nil), nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: zstd: %v", ErrInvalid, err)
		}
		return zr, closerFunc(func() error { zr.Close(); return nil }), nil
	}
	return br, io.NopCloser(nil), nil
}

// closerFunc adapts a function to io.Closer.
type closerFunc func() error

// Close calls f.
func (f closerFunc) Close() error { return f() }

// readAhead reads its source in a goroutine, a few chunks ahead of its reader.
type readAhead struct {
	chunks chan chunk
	free   chan []byte
	done   chan struct{} // closed by Close
	exited chan struct{} // closed when the goroutine is done with src
	cur    []byte
	back   []byte // buffer of cur, returned to free once consumed
	err    error
}

// chunk is one read of the source.
type chunk struct {
	buf []byte
	n   int
	err error
}

// readAheadChunks and readAheadSize bound the memory a readAhead uses.
const (
	readAheadChunks = 4
	readAheadSize   = 256 << 10
)

// newReadAhead starts reading src; srcCloser is closed once reading stops.
func newReadAhead(src io.Reader, srcCloser io.Closer) *readAhead {
	ra := &readAhead{
		chunks: make(chan chunk, readAheadChunks),
		free:   make(chan []byte, readAheadChunks+1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	for i := 0; i < readAheadChunks+1; i++ {
		ra.free <- make([]byte, readAheadSize)
	}
	go func() {
		defer close(ra.exited)
		defer srcCloser.Close()
		defer close(ra.chunks)
		for {
			var buf []byte
			select {
			case buf = <-ra.free:
			case <-ra.done:
				return
			}
			n, err := io.ReadFull(src, buf)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			select {
			case ra.chunks <- chunk{buf, n, err}:
			case <-ra.done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ra
}

// Read returns decompressed bytes.
func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.back != nil {
			ra.free <- ra.back
			ra.back = nil
		}
		if ra.err != nil {
			return 0, ra.err
		}
		c, ok := <-ra.chunks
		if !ok {
			return 0, io.ErrClosedPipe
		}
		ra.cur, ra.back, ra.err = c.buf[:c.n], c.buf, c.err
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the reading goroutine and waits until it no longer touches
// the source (it may finish one read in progress), so the caller may reuse
// or close the source afterwards.
func (ra *readAhead) Close() {
	select {
	case <-ra.done:
	default:
		close(ra.done)
	}
	<-ra.exited
}
