// Package idmap describes the user-namespace id mapping of unprivileged
// containers and shifts a root filesystem's ownership into that mapping.
//
// It owns reading root's subordinate id range from /etc/subuid and
// /etc/subgid, rendering the mapping as LXC configuration, and chowning a
// rootfs from container ids to host ids. It touches nothing but the files it
// is asked to read or shift.
package idmap
