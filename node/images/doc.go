// Package images is the node-local image store and the image builders.
//
// It owns four things:
//
//   - Store: a content-addressed directory of image tarballs. A fingerprint is
//     the SHA-256 of the tarball's bytes, exactly as LXD computes it for unified
//     images, so fingerprints agree across nodes and with LXD.
//   - The unified image format (LXD compatible): a tar stream, plain or
//     compressed with gzip, xz, zstd or bzip2, holding metadata.yaml and rootfs/. Pack writes it
//     deterministically; Unpack extracts rootfs/ into a directory, preserving
//     ownership, modes, links, device nodes and extended attributes, and refuses
//     any entry that would land outside that directory.
//   - OCI images: Import converts an OCI image layout or a docker save
//     archive (checked blob by blob) into a unified image whose rootfs
//     carries the app's command (AppConfig, at AppConfigPath) for the
//     runtime to run under LXC's minimal init.
//   - Builders that make images locally (no image server is reachable):
//     BuildBusybox from the host's static busybox, and BuildDebian with
//     debootstrap, configured for LXC system containers and CRIU.
//
// The package touches only the directories it is given (the store directory, a
// build or unpack destination, the Debian build cache). It does not know about
// the cluster, storage pools or LXC: the reconciler clones a storage volume and
// calls Unpack into it.
package images
