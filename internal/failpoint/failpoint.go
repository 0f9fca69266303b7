// Package failpoint lets end-to-end tests stop, slow or break shoald at
// named points of long operations, to prove what a failure there leaves.
//
// Points are armed through the environment at start-up:
//
//	SHOAL_FAILPOINTS="live-move-before-freeze=exit;restore-receive=sleep(3s)"
//
// Actions: "exit" kills the process at once (SIGKILL, as a crash would),
// "sleep(D)" waits D, "error" makes Hit return ErrInjected. Each point
// fires on every hit unless prefixed with "once:". Unarmed points cost a
// map lookup; production daemons arm none.
package failpoint

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrInjected is what an "error" action returns.
var ErrInjected = errors.New("failpoint: injected failure")

// Env is the environment variable that arms failpoints.
const Env = "SHOAL_FAILPOINTS"

type action struct {
	kind  string // exit, sleep, error
	sleep time.Duration
	once  bool
	fired bool
}

var (
	mu     sync.Mutex
	points = parse(os.Getenv(Env))
)

func parse(spec string) map[string]*action {
	m := map[string]*action{}
	for _, item := range strings.Split(spec, ";") {
		name, act, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			continue
		}
		a := &action{}
		if rest, ok := strings.CutPrefix(act, "once:"); ok {
			a.once, act = true, rest
		}
		switch {
		case act == "exit", act == "error":
			a.kind = act
		case strings.HasPrefix(act, "sleep(") && strings.HasSuffix(act, ")"):
			d, err := time.ParseDuration(act[len("sleep(") : len(act)-1])
			if err != nil {
				continue
			}
			a.kind, a.sleep = "sleep", d
		default:
			continue
		}
		m[name] = a
	}
	return m
}

// Armed reports whether the named point has an action.
func Armed(name string) bool {
	mu.Lock()
	defer mu.Unlock()
	_, ok := points[name]
	return ok
}

// Hit runs the action armed at name, if any.
func Hit(name string) error {
	mu.Lock()
	a, ok := points[name]
	if !ok || (a.once && a.fired) {
		mu.Unlock()
		return nil
	}
	a.fired = true
	mu.Unlock()
	slog.Warn("failpoint hit", "point", name, "action", a.kind)
	switch a.kind {
	case "exit":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	case "sleep":
		time.Sleep(a.sleep)
	case "error":
		return fmt.Errorf("%w at %s", ErrInjected, name)
	}
	return nil
}
