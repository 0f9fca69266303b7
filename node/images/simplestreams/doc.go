// Package simplestreams reads and writes the image index format of the
// public LXD and Incus image servers: streams/v1/index.json pointing at a
// products file (streams/v1/images.json), whose products (os:release:arch:
// variant) list versions, each with its items — a metadata tarball
// (lxd.tar.xz) and a root filesystem (root.squashfs), or one unified
// tarball (lxd_combined.tar.gz). A split image's fingerprint is the SHA-256
// of the metadata tarball followed by the squashfs
// (combined_squashfs_sha256); a unified one's, of its tarball.
//
// Client resolves an alias or fingerprint on a server and downloads an
// image's files, checking every size and SHA-256 and the combined
// fingerprint; Unify turns a split image into the unified tarball the
// node's image store holds. WriteTree writes a server tree of split images
// (Split makes their files from a unified tarball) that any static HTTPS
// server, or `shoal image serve`, can publish.
package simplestreams
