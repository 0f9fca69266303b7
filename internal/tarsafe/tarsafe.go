// Package tarsafe holds the checks Shoal applies to tar entries it did not
// write itself (image tarballs, checkpoint streams from a peer).
package tarsafe

import (
	"archive/tar"
	"strings"
)

// Sparse reports whether h is a sparse file entry, in GNU's old format or
// PAX's (GNU.sparse.* records). Such an entry's data expands to h.Size on
// reading, which may be far more than the stream holds: ten kilobytes of
// tar can write a gigabyte. Shoal's own writers never make them.
func Sparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}
