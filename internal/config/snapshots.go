package config

import (
	"errors"
	"regexp"

	"github.com/shoal-dev/shoal/internal/snapsched"
)

// snapshotNameRe is what a snapshot name may be: 1-63 letters, digits and
// "-_.:", starting with a letter or digit (LXD's names are freer; these
// are the ones every pool driver, path and backup tarball takes as they
// are, and what snapshots.pattern's dates give: 2024-03-04_15-04-05).
var snapshotNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,62}$`)

// ValidateSnapshotName checks a snapshot name.
func ValidateSnapshotName(field, name string) error {
	if !snapshotNameRe.MatchString(name) {
		return invalid(field, "%q is not a valid snapshot name (1-63 letters, digits and '-_.:', starting with a letter or digit)", name)
	}
	return nil
}

// checkSchedule accepts snapshots.schedule values (snapsched.ScheduleHelp).
func checkSchedule(v string) error {
	_, err := snapsched.ParseSchedule(v)
	return unwrapInvalid(err)
}

// checkExpiry accepts snapshots.expiry values (snapsched.ExpiryHelp).
func checkExpiry(v string) error {
	_, err := snapsched.ParseExpiry(v)
	return unwrapInvalid(err)
}

// checkPattern accepts snapshots.pattern values (snapsched.PatternHelp).
func checkPattern(v string) error {
	return unwrapInvalid(snapsched.CheckPattern(v))
}

// unwrapInvalid drops snapsched's "invalid: " prefix: ValidateKey says
// the value is not valid already.
func unwrapInvalid(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if p := snapsched.ErrInvalid.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		msg = msg[len(p):]
	}
	return errors.New(msg)
}
