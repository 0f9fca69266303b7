package operations

import (
	"sync"
	"time"

	shoalv1 "github.com/shoal-dev/shoal/proto/gen/shoal/v1"
)

// Bus fans events out to subscribers. Publishing never blocks: a subscriber
// that falls more than its buffer behind loses events.
type Bus struct {
	mu   sync.Mutex
	subs map[chan *shoalv1.Event]struct{}
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{subs: map[chan *shoalv1.Event]struct{}{}} }

// Publish stamps the event's time if unset and delivers it.
func (b *Bus) Publish(e *shoalv1.Event) {
	if e.TimeUnixNano == 0 {
		e.TimeUnixNano = time.Now().UnixNano()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// Subscribe returns a channel of events and a function that ends the
// subscription.
func (b *Bus) Subscribe() (<-chan *shoalv1.Event, func()) {
	ch := make(chan *shoalv1.Event, 256)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

// Lifecycle publishes a lifecycle event such as ("container-started", "c1").
func (b *Bus) Lifecycle(node, action, resource string) {
	b.Publish(&shoalv1.Event{Type: "lifecycle", Action: action, Resource: resource, Node: node})
}

// LifecycleDetail publishes a lifecycle event with a one-line detail.
func (b *Bus) LifecycleDetail(node, action, resource, detail string) {
	b.Publish(&shoalv1.Event{Type: "lifecycle", Action: action, Resource: resource, Node: node, Detail: detail})
}
